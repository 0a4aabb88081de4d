"""Rohde & Schwarz RTB2000 / RTM3000 / RTO oscilloscopes with binary ``REAL,32`` transfers.

The R&S scopes send a channel's record as 32-bit floats already in volts (``FORMat REAL,32``,
least significant byte first with ``FORMat:BORDer LSBFirst``) after a header query
``CHANnel<m>:DATA:HEADer?`` (first and last sample time, record length, values per sample). The
block length is checked against the header's point count and every value must be finite, so a
truncated, padded or damaged transfer raises :class:`~spinlab.errors.InstrumentError` instead of
returning a shifted record. ``FORMat ASCii`` is kept for comparison (``read_waveform(...,
ascii=True)``).

Commands follow the RTB2000/RTM3000 user manuals (remote control chapter); the RTO takes the same
ones except its trigger subsystem, ``TRIGger[1]:...`` where the others have ``TRIGger:A:...``.
The answering model (``*IDN?``) picks that, the sample rates and the memory (:data:`RS_MODELS`);
the station is checked against the RTM3000's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pymeasure.instruments import Channel, Instrument, SCPIMixin

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.capabilities import ScopeModel
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ErrorQueueMixin,
    ascii_values,
    choice_control,
    ensure_termination,
    flag_control,
    float_reply,
    int_reply,
    parse_float,
    parse_int,
    poll_until,
    range_control,
    read_block,
    termination_off,
)
from spinlab.waveform import Waveform

#: Data sheet values per family: rate and memory with one channel (interleaved), 10 divisions.
RS_MODELS = {
    "RTB2000": ScopeModel(2.5e9, 20_000_000, 1000, (1e-3, 5.0), 20.0, 5.0, 10, "RTB2000"),
    "RTM3000": ScopeModel(5e9, 80_000_000, 1000, (0.5e-3, 10.0), 20.0, 5.0, 10, "RTM3000"),
    "RTO": ScopeModel(20e9, 200_000_000, 1000, (1e-3, 1.0), 5.0, 5.0, 10, "RTO"),
}
#: STATus:OPERation bit 3: the acquisition waits for its trigger.
WAIT_TRIGGER_BIT = 8
#: Time reference (percent of the screen from the left) the capture uses: one division in.
REFERENCE_PERCENT = 10.0
#: Mantissas of the decimation sequence (1-2-5 per decade) from the model's top rate.
_DECADE = (1, 2, 5)


def model_of(idn: str) -> ScopeModel:
    """The family data of the R&S scope answering ``idn`` (its second field)."""
    fields = [f.strip().upper() for f in idn.split(",")]
    name = fields[1] if len(fields) > 1 else ""
    for prefix, model in (("RTB2", "RTB2000"), ("RTM3", "RTM3000"), ("RTO", "RTO")):
        if name.startswith(prefix):
            return RS_MODELS[model]
    raise InstrumentError(f"{idn.strip()!r} is not an R&S RTB2000, RTM3000 or RTO oscilloscope")


def sample_rates(model: ScopeModel) -> tuple[float, ...]:
    """Rates the model offers: its top rate over a 1-2-5 decimation sequence, fastest first."""
    return tuple(model.max_sample_rate_Hz / (m * 10**k) for k in range(10) for m in _DECADE)


def parse_header(reply: str) -> dict[str, Any]:
    """A ``CHANnel<m>:DATA:HEADer?`` reply (``start,stop,points,values per sample``) checked."""
    fields = reply.strip().split(",")
    if len(fields) != 4:
        raise InstrumentError(f"malformed data header: expected 4 fields, got {len(fields)}: {reply!r}")
    try:
        start, stop = (parse_float(v, "data header time") for v in fields[:2])
        points, per_sample = (parse_int(v, "data header count") for v in fields[2:])
    except InstrumentError as exc:
        raise InstrumentError(f"{exc} (data header {reply!r})") from None
    if points < 0 or per_sample not in (1, 2) or not (math.isfinite(start) and math.isfinite(stop)):
        raise InstrumentError(f"data header has invalid points/values per sample/times: {reply!r}")
    if points > 1 and not stop > start:
        raise InstrumentError(f"data header stop time is not after its start: {reply!r}")
    dt = (stop - start) / (points - 1) if points > 1 else 0.0
    return {"start_s": start, "stop_s": stop, "points": points, "values_per_sample": per_sample, "dt_s": dt}


class RsScopeChannel(Channel):
    """One analog input; ``{ch}`` is the channel number."""

    enabled = flag_control(
        "CHANnel{ch}:STATe?", "CHANnel{ch}:STATe %d", """Control whether the channel is on.""", "state"
    )
    scale_V = range_control(
        "CHANnel{ch}:SCALe?",
        "CHANnel{ch}:SCALe %.6g",
        """Control the vertical scale in V/div (float; full scale is 10 divisions).""",
        (0.5e-3, 10.0),
        "channel scale",
    )
    offset_V = range_control(
        "CHANnel{ch}:OFFSet?",
        "CHANnel{ch}:OFFSet %.6g",
        """Control the voltage at the screen centre (float).""",
        (-20.0, 20.0),
        "channel offset",
    )
    position_div = range_control(
        "CHANnel{ch}:POSition?",
        "CHANnel{ch}:POSition %.6g",
        """Control the vertical position in divisions (float).""",
        (-5.0, 5.0),
        "channel position",
    )
    coupling = choice_control(
        "CHANnel{ch}:COUPling?",
        "CHANnel{ch}:COUPling %s",
        """Control coupling and termination (str: DC 50 ohm, DCL 1 Mohm DC, ACL 1 Mohm AC).""",
        ["DC", "DCL", "ACL", "GND"],
        "coupling",
    )


class RsScope(ErrorQueueMixin, SCPIMixin, Instrument):
    """R&S RTB2000 / RTM3000 / RTO with binary ``REAL,32`` transfers (the ``scope`` role)."""

    ERROR_QUERY = "SYSTem:ERRor?"

    ch_1 = Instrument.ChannelCreator(RsScopeChannel, 1)
    ch_2 = Instrument.ChannelCreator(RsScopeChannel, 2)
    ch_3 = Instrument.ChannelCreator(RsScopeChannel, 3)
    ch_4 = Instrument.ChannelCreator(RsScopeChannel, 4)

    def __init__(self, adapter, name: str = "R&S oscilloscope", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)
        self._model: ScopeModel | None = None

    @property
    def model(self) -> ScopeModel:
        """The answering family's data (asked once with ``*IDN?``)."""
        if self._model is None:
            self._model = model_of(self.id)
        return self._model

    @property
    def SAMPLE_RATES_Hz(self) -> tuple[float, ...]:  # noqa: N802 - the role's name
        return sample_rates(self.model)

    timebase_range_s = range_control(
        "TIMebase:RANGe?",
        "TIMebase:RANGe %.12g",
        """Control the screen's time span (s).""",
        (1e-9, 500.0),
        "range",
    )
    timebase_position_s = range_control(
        "TIMebase:POSition?",
        "TIMebase:POSition %.12g",
        """Control the time from the trigger to the time reference (s).""",
        (-500.0, 500.0),
        "timebase position",
    )
    timebase_reference_percent = range_control(
        "TIMebase:REFerence?",
        "TIMebase:REFerence %.6g",
        """Control where the time reference sits (percent of the screen from the left).""",
        (0.0, 100.0),
        "timebase reference",
    )
    record_points = range_control(
        "ACQuire:POINts?",
        "ACQuire:POINts %d",
        """Control the record length in samples (int).""",
        (1000, 200_000_000),
        "record length",
        kind=int,
    )
    sample_rate_Hz = Instrument.measurement(
        "ACQuire:SRATe?",
        """Get the sample rate the record length and time span give (float, Sa/s).""",
        get_process=float_reply("sample rate"),
        **RAW_REPLY,
    )
    trigger_mode = choice_control(
        "TRIGger:A:MODE?",
        "TRIGger:A:MODE %s",
        """Control the trigger mode (str: NORM waits for a trigger, AUTO free-runs).""",
        ["NORM", "AUTO"],
        "trigger mode",
    )
    trigger_source = choice_control(
        "TRIGger:A:SOURce?",
        "TRIGger:A:SOURce %s",
        """Control the trigger source (str: EXT the external input, CH1..CH4, LINE).""",
        ["EXT", "CH1", "CH2", "CH3", "CH4", "LINE"],
        "trigger source",
    )
    trigger_slope = choice_control(
        "TRIGger:A:EDGE:SLOPe?",
        "TRIGger:A:EDGE:SLOPe %s",
        """Control the edge slope (str: POS, NEG, EITH).""",
        ["POS", "NEG", "EITH"],
        "trigger slope",
    )
    external_trigger_level_V = range_control(
        "TRIGger:A:LEVel5:VALue?",
        "TRIGger:A:LEVel5:VALue %.6g",
        """Control the external trigger input's level (V; level 5 is the external input).""",
        (-5.0, 5.0),
        "trigger level",
    )
    operation_condition = Instrument.measurement(
        "STATus:OPERation:CONDition?",
        """Get the operation status condition register (int; bit 3 = waiting for the trigger).""",
        get_process=int_reply("operation condition"),
        **RAW_REPLY,
    )
    acquisition_state = Instrument.measurement(
        "ACQuire:STATe?",
        """Get the acquisition state (str: RUN, STOP, COMP after a single acquisition, BRE).""",
        get_process=lambda reply: str(reply).strip().upper()[:4],
        **RAW_REPLY,
    )

    def channel(self, number: int) -> RsScopeChannel:
        if number not in self.channels:
            raise ConfigError(f"channel must be one of {sorted(self.channels)}, got {number!r}")
        return self.channels[number]

    # --- setup ---------------------------------------------------------------------------------
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
        """One externally triggered capture of ``duration_s`` (after ``pretrigger_s``) on
        ``channel`` at ``sample_rate_Hz``, ``full_scale_V`` over 10 divisions around ``offset_V``.
        Returns the record's points, sample rate and start time."""
        ch = self.channel(channel)
        model = self.model
        if segments is not None:
            raise ConfigError("this driver records one trigger per capture (segments=None)")
        rate = float(sample_rate_Hz)
        if not any(math.isclose(r, rate, rel_tol=1e-9) for r in sample_rates(model)):
            raise ConfigError(f"sample rate {sample_rate_Hz!r} Sa/s is not one the {model.family} offers")
        if not (
            math.isfinite(duration_s) and duration_s > 0 and math.isfinite(pretrigger_s) and pretrigger_s >= 0
        ):
            raise ConfigError(
                f"duration_s must be > 0 and pretrigger_s >= 0, got {duration_s!r}, {pretrigger_s!r}"
            )
        low, high = (model.vertical_divisions * v for v in model.scale_V_per_div)
        if not (math.isfinite(full_scale_V) and low <= full_scale_V <= high):
            raise ConfigError(
                f"full_scale_V must be {low:g} .. {high:g} V on the {model.family}, got {full_scale_V!r}"
            )
        if impedance not in ("FIFT", "ONEM"):
            raise ConfigError(f"impedance must be FIFT or ONEM, got {impedance!r}")
        if not (math.isfinite(trigger_level_V) and abs(trigger_level_V) <= model.max_trigger_level_V):
            raise ConfigError(
                f"trigger_level_V must be within +-{model.max_trigger_level_V:g} V, got {trigger_level_V!r}"
            )
        points = max(math.ceil((duration_s + pretrigger_s) * rate - 1e-9), model.min_points)
        if points > model.memory_points:
            raise ConfigError(
                f"{points} points exceed the {model.family}'s {model.memory_points}-point memory; "
                "shorten the capture or lower the sample rate"
            )
        time_range = points / rate
        self.write("STOP")
        ch.enabled = True
        ch.coupling = "DC" if impedance == "FIFT" else "DCL"
        ch.scale_V = full_scale_V / model.vertical_divisions
        ch.position_div = 0.0
        ch.offset_V = offset_V
        self.timebase_reference_percent = REFERENCE_PERCENT
        self.timebase_range_s = time_range
        self.timebase_position_s = REFERENCE_PERCENT / 100 * time_range - pretrigger_s
        self.record_points = points
        # the RTB/RTM trigger subsystem is TRIGger:A:..., the RTO's TRIGger[1]:... (the A event)
        trigger = "TRIGger" if model.family == "RTO" else "TRIGger:A"
        self.write(f"{trigger}:MODE NORM")
        self.write(f"{trigger}:SOURce EXT")
        self.write(f"{trigger}:EDGE:SLOPe POS")
        self.write(f"{trigger}:LEVel5:VALue {trigger_level_V:.6g}")
        got_rate, got_points = self.sample_rate_Hz, self.record_points
        if not math.isclose(got_rate, rate, rel_tol=1e-9) or got_points != points:
            raise InstrumentError(
                f"scope set {got_points} points at {got_rate:g} Sa/s instead of {points} at {rate:g} Sa/s; "
                "its memory or sample rates differ from the station's [scope] max_points / max_sample_rate_Hz"
            )
        self.raise_errors("configuring the capture")
        return {"points": points, "sample_rate_Hz": rate, "start_s": 0.0 - float(pretrigger_s), "segments": 1}

    # --- acquisition ---------------------------------------------------------------------------
    def arm_single(self, timeout_s: float = 5.0) -> None:
        """Start one acquisition (``SINGle``); :meth:`waiting_for_trigger` tells when it is armed."""
        self.write("SINGle")

    def waiting_for_trigger(self) -> bool:
        """True once armed and waiting for the trigger (``STATus:OPERation`` bit 3); a scope that
        stopped without acquiring (a reset, a stray trigger) raises InstrumentError."""
        if self.operation_condition & WAIT_TRIGGER_BIT:
            return True
        if self.acquisition_state != "RUN":
            raise InstrumentError(
                "the scope stopped before the trigger (was it reset, or triggered by something else?)"
            )
        return False

    def wait_acquired(self, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
        """Block until the single acquisition completed (``ACQuire:STATe?`` leaves RUN)."""
        poll_until(
            lambda: self.acquisition_state != "RUN",
            timeout_s,
            "scope did not finish acquiring: no trigger arrived? Check the external trigger cable "
            "and level, and that the AWG burst was triggered",
            first_s=poll_s,
            max_s=0.05,
        )

    # --- transfer ------------------------------------------------------------------------------
    def header(self, channel: int) -> dict[str, Any]:
        """``CHANnel<m>:DATA:HEADer?`` checked (see :func:`parse_header`)."""
        self.channel(channel)
        return parse_header(self.ask(f"CHANnel{channel}:DATA:HEADer?"))

    def read_waveform(self, channel: int, ascii: bool = False) -> Waveform:
        """The last record of ``channel`` in volts, binary ``REAL,32`` (or ASCII, slower)."""
        self.channel(channel)
        form = "ASCii" if ascii else "REAL,32"
        self.write(f"FORMat:DATA {form};:FORMat:BORDer LSBFirst;:CHANnel{channel}:DATA:POINts MAXimum")
        head = self.header(channel)
        points = head["points"]
        if points == 0 or head["values_per_sample"] != 1:
            raise InstrumentError(
                "the scope has no acquired record of single values: arm (arm_single) and trigger first"
            )
        self.write(f"CHANnel{channel}:DATA?")
        if ascii:
            reply = self.read().strip()
            values = ascii_values(reply, "ASCII samples")
            if values.size != points:
                raise InstrumentError(f"the scope sent {values.size} values; its header announced {points}")
        else:
            with termination_off(self):
                payload = read_block(self, expected_bytes=4 * points)
            values = np.frombuffer(payload, dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InstrumentError("the scope sent non-finite samples (damaged transfer?)")
        return Waveform(values, head["dt_s"], "V", head["start_s"], {"channel": channel, "header": head})


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
RS_RTB2000 = DriverSpec(
    "rs-rtb2000",
    "scope",
    RsScope,
    r"Rohde ?& ?Schwarz",
    r"(RTB2\d{3}|RTM3\d{3}|RTO\d{2,4}[A-Z]*)",
    RS_MODELS["RTM3000"],
    "Rohde & Schwarz RTB2000 / RTM3000 / RTO oscilloscope, binary REAL,32 transfer",
)
