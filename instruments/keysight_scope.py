"""Keysight InfiniiVision oscilloscope with binary (WORD) waveform transfer.

pymeasure's InfiniiVision drivers read waveforms as ASCII; this one reads signed 16-bit words,
LSB first, as one IEEE 488.2 definite-length block per transfer and scales them with numpy
(``volts = (code - yreference) * yincrement + yorigin``). The preamble is parsed and validated,
and the block length is checked against it, so a truncated or padded transfer raises
:class:`~spinlab.errors.InstrumentError` instead of returning a shifted record.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pymeasure.instruments import Channel, Instrument, SCPIMixin
from pymeasure.instruments.validators import strict_discrete_set, strict_range

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.capabilities import INFINIIVISION as _CAPS
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ErrorQueueMixin,
    bool_reply,
    choice_control,
    ensure_termination,
    flag_control,
    float_reply,
    int_reply,
    parse_choice,
    parse_float,
    parse_int,
    poll_until,
    read_block,
)
from spinlab.waveform import Waveform

PREAMBLE_FIELDS = (
    "format",
    "type",
    "points",
    "count",
    "x_increment_s",
    "x_origin_s",
    "x_reference",
    "y_increment_V",
    "y_origin_V",
    "y_reference",
)
_FORMATS = {0: "BYTE", 1: "WORD", 4: "ASCII"}
_TYPES = {0: "NORMAL", 1: "PEAK", 2: "AVERAGE", 3: "HRESOLUTION"}
#: Fraction of the screen left of the time reference (one division from the edge).
_REFERENCE_FRACTION = {"LEFT": 0.1, "CENT": 0.5, "RIGH": 0.9}
#: :OPERegister:CONDition? bit set while the scope is acquiring.
RUN_BIT = 8
#: :OPERegister:CONDition? bit set while the scope is armed and waits for a trigger.
WAIT_TRIGGER_BIT = 32
#: Rates a 5 GSa/s InfiniiVision offers: 5 GSa/s over a 1-2-2.5-4-5 decimation sequence.
SAMPLE_RATES_Hz = tuple(
    _CAPS.max_sample_rate_Hz / d for d in sorted({m * 10**k for k in range(11) for m in (1, 2, 2.5, 4, 5)})
)


def parse_preamble(reply: str) -> dict[str, Any]:
    """A ``:WAVeform:PREamble?`` reply as a validated dict (keys: ``PREAMBLE_FIELDS``)."""
    reply = reply.strip()
    fields = reply.split(",")
    if len(fields) != len(PREAMBLE_FIELDS):
        raise InstrumentError(f"malformed preamble: expected 10 fields, got {len(fields)}: {reply!r}")
    try:
        values = dict(zip(PREAMBLE_FIELDS, fields))
        out: dict[str, Any] = {}
        for key in ("format", "type", "points", "count", "x_reference", "y_reference"):
            out[key] = parse_int(values[key], f"preamble {key}")
        for key in ("x_increment_s", "x_origin_s", "y_increment_V", "y_origin_V"):
            out[key] = parse_float(values[key], f"preamble {key}")
    except InstrumentError as exc:
        raise InstrumentError(f"{exc} (preamble {reply!r})") from None
    if out["format"] not in _FORMATS or out["type"] not in _TYPES:
        raise InstrumentError(f"preamble has unknown format/type: {reply!r}")
    if out["points"] < 0 or out["count"] < 1:
        raise InstrumentError(f"preamble has invalid points/count: {reply!r}")
    for key in ("x_increment_s", "y_increment_V"):
        if not (math.isfinite(out[key]) and out[key] > 0):
            raise InstrumentError(f"preamble {key} must be positive, got {reply!r}")
    for key in ("x_origin_s", "y_origin_V"):
        if not math.isfinite(out[key]):
            raise InstrumentError(f"preamble {key} is not finite: {reply!r}")
    out["format"] = _FORMATS[out["format"]]
    out["type"] = _TYPES[out["type"]]
    return out


class InfiniiVisionChannel(Channel):
    """One analog input; ``{ch}`` is the channel number."""

    scale_V = Channel.control(
        ":CHANnel{ch}:SCALe?",
        ":CHANnel{ch}:SCALe %.6g",
        """Control the vertical scale in V/div (float; full scale is 8 divisions).""",
        validator=strict_range,
        values=list(_CAPS.scale_V_per_div),
        get_process=float_reply("channel scale"),
        **RAW_REPLY,
    )
    offset_V = Channel.control(
        ":CHANnel{ch}:OFFSet?",
        ":CHANnel{ch}:OFFSet %.6g",
        """Control the voltage at the screen centre (float).""",
        validator=strict_range,
        values=[-_CAPS.max_offset_V, _CAPS.max_offset_V],
        get_process=float_reply("channel offset"),
        **RAW_REPLY,
    )
    coupling = choice_control(
        ":CHANnel{ch}:COUPling?",
        ":CHANnel{ch}:COUPling %s",
        """Control the input coupling (str: DC or AC).""",
        ["DC", "AC"],
        "coupling",
    )
    impedance = choice_control(
        ":CHANnel{ch}:IMPedance?",
        ":CHANnel{ch}:IMPedance %s",
        """Control the input impedance (str: FIFT for 50 ohm, ONEM for 1 Mohm).""",
        ["FIFT", "ONEM"],
        "impedance",
    )
    display_enabled = flag_control(
        ":CHANnel{ch}:DISPlay?",
        ":CHANnel{ch}:DISPlay %d",
        """Control whether the channel is on (bool); only displayed channels are acquired.""",
        "channel display",
    )


class InfiniiVisionScope(ErrorQueueMixin, SCPIMixin, Instrument):
    """Keysight InfiniiVision (e.g. DSOX4024A) with binary WORD transfers and segmented memory
    (the ``scope`` role)."""

    ERROR_QUERY = ":SYSTem:ERRor?"
    SAMPLE_RATES_Hz = SAMPLE_RATES_Hz

    ch_1 = Instrument.ChannelCreator(InfiniiVisionChannel, 1)
    ch_2 = Instrument.ChannelCreator(InfiniiVisionChannel, 2)
    ch_3 = Instrument.ChannelCreator(InfiniiVisionChannel, 3)
    ch_4 = Instrument.ChannelCreator(InfiniiVisionChannel, 4)

    #: Acquisition memory (points) shared by all segments.
    MEMORY_POINTS = _CAPS.memory_points
    MIN_POINTS = _CAPS.min_points

    def __init__(self, adapter, name: str = "Keysight InfiniiVision oscilloscope", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)

    # --- timebase, trigger, acquisition --------------------------------------------------------
    timebase_range_s = Instrument.control(
        ":TIMebase:RANGe?",
        ":TIMebase:RANGe %.12g",
        """Control the full-screen time span in seconds (float).""",
        validator=strict_range,
        values=[1e-9, 500.0],
        get_process=float_reply("timebase range"),
        **RAW_REPLY,
    )
    timebase_position_s = Instrument.control(
        ":TIMebase:POSition?",
        ":TIMebase:POSition %.12g",
        """Control the time from the trigger to the time reference in seconds (float).""",
        validator=strict_range,
        values=[-500.0, 500.0],
        get_process=float_reply("timebase position"),
        **RAW_REPLY,
    )
    timebase_reference = choice_control(
        ":TIMebase:REFerence?",
        ":TIMebase:REFerence %s",
        """Control where the time reference sits (str: LEFT, CENT, RIGH).""",
        ["LEFT", "CENT", "RIGH"],
        "timebase reference",
    )
    trigger_source = Instrument.control(
        ":TRIGger:EDGE:SOURce?",
        ":TRIGger:EDGE:SOURce %s",
        """Control the edge trigger source (str: EXT, CHAN1..CHAN4, LINE).""",
        validator=strict_discrete_set,
        values=["EXT", "CHAN1", "CHAN2", "CHAN3", "CHAN4", "LINE"],
        get_process=parse_choice(
            ["EXT", "CHAN1", "CHAN2", "CHAN3", "CHAN4", "LINE", "WGEN"], "trigger source"
        ),
        **RAW_REPLY,
    )
    trigger_level_V = Instrument.control(
        ":TRIGger:EDGE:LEVel?",
        ":TRIGger:EDGE:LEVel %.6g",
        """Control the trigger level in volts (float).""",
        validator=strict_range,
        values=[-_CAPS.max_trigger_level_V, _CAPS.max_trigger_level_V],
        get_process=float_reply("trigger level"),
        **RAW_REPLY,
    )
    trigger_slope = choice_control(
        ":TRIGger:EDGE:SLOPe?",
        ":TRIGger:EDGE:SLOPe %s",
        """Control the trigger slope (str: POS, NEG, EITH, ALT).""",
        ["POS", "NEG", "EITH", "ALT"],
        "trigger slope",
    )
    trigger_sweep = choice_control(
        ":TRIGger:SWEep?",
        ":TRIGger:SWEep %s",
        """Control the sweep (str: NORM waits for a trigger, AUTO free-runs without one).""",
        ["NORM", "AUTO"],
        "trigger sweep",
    )
    acquire_type = choice_control(
        ":ACQuire:TYPE?",
        ":ACQuire:TYPE %s",
        """Control the acquisition type (str: NORM, AVER, HRES, PEAK).""",
        ["NORM", "AVER", "HRES", "PEAK"],
        "acquisition type",
    )
    acquire_mode = choice_control(
        ":ACQuire:MODE?",
        ":ACQuire:MODE %s",
        """Control the acquisition mode (str: RTIM real time, SEGM segmented memory).""",
        ["RTIM", "SEGM"],
        "acquisition mode",
    )
    segment_count = Instrument.control(
        ":ACQuire:SEGMented:COUNt?",
        ":ACQuire:SEGMented:COUNt %d",
        """Control how many triggers one segmented acquisition records (int, 2 .. 1000).""",
        validator=strict_range,
        values=[2, 1000],
        set_process=int,
        get_process=int_reply("segment count"),
        **RAW_REPLY,
    )
    segment_index = Instrument.control(
        ":ACQuire:SEGMented:INDex?",
        ":ACQuire:SEGMented:INDex %d",
        """Control which segment waveform queries return (int, from 1).""",
        validator=strict_range,
        values=[1, 1000],
        set_process=int,
        get_process=int_reply("segment index"),
        **RAW_REPLY,
    )
    sample_rate_Hz = Instrument.control(
        ":ACQuire:SRATe?",
        ":ACQuire:SRATe %.12g",
        """Control the sample rate in Sa/s (float; rounded up to an available rate).""",
        validator=strict_range,
        values=[1e-3, _CAPS.max_sample_rate_Hz],
        get_process=float_reply("sample rate"),
        **RAW_REPLY,
    )
    acquire_points = Instrument.control(
        ":ACQuire:POINts?",
        ":ACQuire:POINts %d",
        """Control the record length in points (int).""",
        validator=strict_range,
        values=[_CAPS.min_points, _CAPS.memory_points],
        set_process=int,
        get_process=int_reply("acquisition points"),
        **RAW_REPLY,
    )
    waveform_points_mode = choice_control(
        ":WAVeform:POINts:MODE?",
        ":WAVeform:POINts:MODE %s",
        """Control which record is transferred (str: RAW the full acquisition record).""",
        ["NORM", "MAX", "RAW"],
        "points mode",
    )
    waveform_points = Instrument.control(
        ":WAVeform:POINts?",
        ":WAVeform:POINts %d",
        """Control how many points a transfer returns (int).""",
        validator=strict_range,
        values=[1, _CAPS.memory_points],
        set_process=int,
        get_process=int_reply("waveform points"),
        **RAW_REPLY,
    )
    operation_condition = Instrument.measurement(
        ":OPERegister:CONDition?",
        """Get the operation status condition register (int; bit 3 = acquiring).""",
        get_process=int_reply("operation condition"),
        **RAW_REPLY,
    )
    arm_event = Instrument.measurement(
        ":AER?",
        """Get (and clear) the arm event register: True once the trigger system was armed.""",
        get_process=bool_reply("arm event register"),
        **RAW_REPLY,
    )
    acquired_segments = Instrument.measurement(
        ":WAVeform:SEGMented:COUNt?",
        """Get how many segments the last segmented acquisition holds (int).""",
        get_process=int_reply("segment count"),
        **RAW_REPLY,
    )

    # --- setup ---------------------------------------------------------------------------------
    def channel(self, number: int) -> InfiniiVisionChannel:
        if number not in self.channels:
            raise ConfigError(f"channel must be one of {sorted(self.channels)}, got {number!r}")
        return self.channels[number]

    def configure_capture(
        self,
        channel: int,
        duration_s: float,
        sample_rate_Hz: float,
        full_scale_V: float,
        offset_V: float = 0.0,
        trigger_level_V: float = 1.0,
        pretrigger_s: float = 0.0,
        segments: int | None = None,
        impedance: str = "FIFT",
    ) -> dict[str, float]:
        """Set up one EXT-triggered capture of ``duration_s`` (after ``pretrigger_s`` before the
        trigger) on ``channel`` at ``sample_rate_Hz``, ``full_scale_V`` peak-to-peak around
        ``offset_V``; ``segments`` >= 2 records that many triggers in segmented memory.
        Returns the record's points, sample rate and start time."""
        ch = self.channel(channel)
        rate = float(sample_rate_Hz)
        match = [r for r in SAMPLE_RATES_Hz if math.isclose(r, rate, rel_tol=1e-9)]
        if not match:
            nearest = sorted(SAMPLE_RATES_Hz, key=lambda r: abs(math.log(r / rate)) if rate > 0 else 0)[:3]
            raise ConfigError(
                f"sample rate {sample_rate_Hz!r} Sa/s is not available; nearest: "
                + ", ".join(f"{r:g}" for r in sorted(nearest))
            )
        if not (math.isfinite(duration_s) and duration_s > 0) or not (
            math.isfinite(pretrigger_s) and pretrigger_s >= 0
        ):
            raise ConfigError(
                f"duration_s must be > 0 and pretrigger_s >= 0, got {duration_s!r}, {pretrigger_s!r}"
            )
        if not (math.isfinite(full_scale_V) and full_scale_V > 0):
            raise ConfigError(f"full_scale_V must be a positive number, got {full_scale_V!r}")
        n_segments = 1 if segments is None else int(segments)
        if segments is not None and not 2 <= n_segments <= 1000:
            raise ConfigError(f"segments must be 2 .. 1000 (or None for one record), got {segments!r}")
        points = max(math.ceil((duration_s + pretrigger_s) * rate - 1e-9), self.MIN_POINTS)
        if points * n_segments > self.MEMORY_POINTS:
            raise ConfigError(
                f"{n_segments} x {points} points exceed the {self.MEMORY_POINTS}-point acquisition memory; "
                "shorten the capture or lower the sample rate"
            )
        time_range = points / rate
        self.write(":STOP")
        ch.display_enabled = True
        ch.impedance = impedance
        ch.coupling = "DC"
        ch.scale_V = full_scale_V / 8
        ch.offset_V = offset_V
        self.timebase_reference = "LEFT"
        self.timebase_range_s = time_range
        self.timebase_position_s = _REFERENCE_FRACTION["LEFT"] * time_range - pretrigger_s
        self.trigger_source = "EXT"
        self.trigger_level_V = trigger_level_V
        self.trigger_slope = "POS"
        self.trigger_sweep = "NORM"
        self.acquire_type = "NORM"
        if segments is None:
            self.acquire_mode = "RTIM"
        else:
            self.acquire_mode = "SEGM"
            self.segment_count = n_segments
        self.sample_rate_Hz = rate
        self.acquire_points = points
        self._select_transfer(channel)
        self.waveform_points = points
        got_rate, got_points = self.sample_rate_Hz, self.acquire_points
        if not math.isclose(got_rate, rate, rel_tol=1e-9) or got_points != points:
            raise InstrumentError(
                f"scope set {got_points} points at {got_rate:g} Sa/s instead of {points} at {rate:g} Sa/s; "
                "its memory or sample rates differ from the station's [scope] max_points / max_sample_rate_Hz"
            )
        self.raise_errors("configuring the capture")
        return {
            "points": points,
            "sample_rate_Hz": rate,
            "start_s": 0.0 - float(pretrigger_s),
            "segments": n_segments,
        }

    def _select_transfer(self, channel: int) -> None:
        """Source and binary format of the next transfer, in one message: signed 16-bit words,
        least significant byte first, the full raw record."""
        self.channel(channel)
        self.write(
            f":WAVeform:SOURce CHANnel{channel};FORMat WORD;BYTeorder LSBFirst;UNSigned 0;POINts:MODE RAW"
        )

    # --- acquisition ---------------------------------------------------------------------------
    def arm_single(self, timeout_s: float = 5.0) -> None:
        """Arm one acquisition (``:SINGle``) and return once the trigger system is armed
        (``:AER?``), so a trigger sent to another instrument right after cannot be missed."""
        self.write(":SINGle")
        poll_until(
            lambda: self.arm_event,
            timeout_s,
            "scope did not finish arming (:SINGle)",
            first_s=0.001,
            max_s=0.05,
        )

    def waiting_for_trigger(self) -> bool:
        """True once armed and waiting for the trigger (``:OPERegister:CONDition?`` bit 5): a real
        scope needs a moment after ``:SINGle``, and a trigger sent before would be lost. A scope
        that stopped running meanwhile (a reset, a stray trigger) raises InstrumentError."""
        condition = self.operation_condition
        if not condition & (WAIT_TRIGGER_BIT | RUN_BIT):
            raise InstrumentError(
                "the scope stopped before the trigger (was it reset, or triggered by something else?)"
            )
        return bool(condition & WAIT_TRIGGER_BIT)

    def digitize(self, channel: int, timeout_s: float = 10.0) -> Waveform:
        """Acquire with the current settings (``:DIGitize``) and return the record."""
        self.channel(channel)
        self.write(f":DIGitize CHANnel{channel}")
        self.wait_acquired(timeout_s)
        return self.read_waveform(channel)

    def wait_acquired(self, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
        """Block until the run bit of ``:OPERegister:CONDition?`` clears (acquisition done)."""
        poll_until(
            lambda: not self.operation_condition & RUN_BIT,
            timeout_s,
            "scope did not finish acquiring: no trigger arrived? Check the EXT trigger cable "
            "and level, and that the AWG burst was triggered",
            first_s=poll_s,
            max_s=0.05,
        )

    def preamble(self) -> dict[str, Any]:
        """``:WAVeform:PREamble?`` as a validated dict (see :func:`parse_preamble`)."""
        return parse_preamble(self.ask(":WAVeform:PREamble?"))

    def _read_codes(self, expected_points: int) -> np.ndarray:
        self.write(":WAVeform:DATA?")
        payload = read_block(self, expected_bytes=2 * expected_points)
        return np.frombuffer(payload, dtype="<i2")

    @staticmethod
    def _scale(codes: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
        return (codes.astype(np.float64) - pre["y_reference"]) * pre["y_increment_V"] + pre["y_origin_V"]

    def read_waveform(self, channel: int) -> Waveform:
        """The last record of ``channel`` in volts; ``dt_s`` and ``t0_s`` (time of the first
        sample relative to the trigger) come from the preamble."""
        self._select_transfer(channel)
        pre = self._checked_preamble()
        if pre["count"] != 1:
            raise InstrumentError(
                f"preamble describes {pre['count']} segments; use read_segments() for segmented captures"
            )
        codes = self._read_codes(pre["points"])
        return Waveform(
            self._scale(codes, pre),
            pre["x_increment_s"],
            "V",
            pre["x_origin_s"],
            {"channel": channel, "preamble": pre},
        )

    def read_segments(self, channel: int, all_at_once: bool = True) -> Waveform:
        """Every segment of the last segmented acquisition as a batch ``(segments, points)``.

        ``all_at_once`` transfers them in one block (``:WAVeform:SEGMented:ALL ON``); otherwise
        one block per ``:ACQuire:SEGMented:INDex``.
        """
        count = self.acquired_segments
        if count < 1:
            raise InstrumentError("the scope holds no segments: arm a segmented acquisition and trigger it")
        self._select_transfer(channel)
        if all_at_once:
            self.write(":WAVeform:SEGMented:ALL 1")
            pre = self._checked_preamble()
            if pre["count"] != count:
                raise InstrumentError(
                    f"preamble reports {pre['count']} segments, the scope {count}; re-acquire"
                )
            codes = self._read_codes(pre["points"] * count).reshape(count, pre["points"])
            self.write(":WAVeform:SEGMented:ALL 0")
            samples = self._scale(codes, pre)
        else:
            rows, pre = [], None
            for index in range(1, count + 1):
                self.segment_index = index
                seg_pre = self._checked_preamble()
                if pre is not None and (seg_pre["points"], seg_pre["x_increment_s"]) != (
                    pre["points"],
                    pre["x_increment_s"],
                ):
                    raise InstrumentError(f"segment {index} has a different time base than segment 1")
                pre = seg_pre
                rows.append(self._scale(self._read_codes(seg_pre["points"]), seg_pre))
            samples = np.stack(rows)
        return Waveform(
            samples,
            pre["x_increment_s"],
            "V",
            pre["x_origin_s"],
            {"channel": channel, "segments": count, "preamble": pre},
        )

    def _checked_preamble(self) -> dict[str, Any]:
        pre = self.preamble()
        if pre["format"] != "WORD":
            raise InstrumentError(f"scope transfers {pre['format']}, expected WORD")
        if pre["points"] == 0:
            raise InstrumentError(
                "the scope has no acquired data: arm (arm_single/digitize) and trigger first"
            )
        return pre


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
KEYSIGHT_INFINIIVISION = DriverSpec(
    "keysight-infiniivision",
    "scope",
    InfiniiVisionScope,
    r"(Keysight|Agilent) Technologies",
    r"(DSO|MSO)-?X ?\d{4}[A-Z]*",
    _CAPS,
    "Keysight InfiniiVision X-series oscilloscope, binary WORD transfer",
)
