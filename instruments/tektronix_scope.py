"""Tektronix 4/5/6 Series MSO oscilloscopes with binary ``CURVe?`` transfers.

A Tektronix scope sends a record as integer codes (``DATa:ENCdg SRIbinary``: signed, least
significant byte first; ``WFMOutpre:BYT_Nr 2``) and describes their scale in the waveform
preamble ``WFMOutpre?`` (``volts = (code - YOFf) * YMUlt + YZEro``, ``t = XZEro + (i - PT_Off) *
XINcr``, ``NR_Pt`` points). The block length is checked against ``NR_Pt`` and the preamble's
encoding against what was asked, so a truncated, padded or reformatted transfer raises
:class:`~spinlab.errors.InstrumentError` instead of returning a shifted record. ``DATa:ENCdg
ASCii`` is kept for comparison (``read_waveform(..., ascii=True)``).

Commands follow the 4/5/6 Series MSO programmer manual. The instrument reports errors as events:
``*ESR?`` moves them to the event queue, ``EVMsg?`` reads one (``0,"No events to report..."``
when empty). The answering model (``*IDN?``) picks the sample rates and memory
(:data:`TEK_MODELS`); the station is checked against the MSO5's.
"""

from __future__ import annotations

import math
import re
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
    drain_errors,
    ensure_termination,
    flag_control,
    int_reply,
    parse_float,
    parse_int,
    poll_until,
    range_control,
    read_block,
    termination_off,
)
from spinlab.waveform import Waveform

#: Data sheet values per series (standard record length, 50-ohm scale range, 10 divisions).
TEK_MODELS = {
    "MSO4": ScopeModel(6.25e9, 31_250_000, 1000, (0.5e-3, 1.0), 10.0, 5.0, 10, "MSO4"),
    "MSO5": ScopeModel(6.25e9, 62_500_000, 1000, (0.5e-3, 1.0), 10.0, 5.0, 10, "MSO5"),
    "MSO6": ScopeModel(25e9, 62_500_000, 1000, (0.5e-3, 1.0), 10.0, 5.0, 10, "MSO6"),
}
#: ``WFMOutpre?`` fields in the order the 4/5/6 Series send them (``HEADer OFF``).
PREAMBLE_FIELDS = (
    "BYT_NR",
    "BIT_NR",
    "ENCDG",
    "BN_FMT",
    "BYT_OR",
    "WFID",
    "NR_PT",
    "PT_FMT",
    "PT_ORDER",
    "XUNIT",
    "XINCR",
    "XZERO",
    "PT_OFF",
    "YUNIT",
    "YMULT",
    "YOFF",
    "YZERO",
)
_FIELDS_RE = re.compile(r'"[^"]*"|[^;]+')
_DECADE = (1, 2, 5)


def model_of(idn: str) -> ScopeModel:
    """The series data of the Tektronix scope answering ``idn`` (its second field)."""
    fields = [f.strip().upper() for f in idn.split(",")]
    match = re.match(r"(MSO|DPO|LPD)([456])", fields[1] if len(fields) > 1 else "")
    if not match:
        raise InstrumentError(f"{idn.strip()!r} is not a Tektronix 4, 5 or 6 Series MSO")
    return TEK_MODELS[f"MSO{match.group(2)}"]


def sample_rates(model: ScopeModel) -> tuple[float, ...]:
    """Rates the model offers: its top rate over a 1-2-5 decimation sequence, fastest first."""
    return tuple(model.max_sample_rate_Hz / (m * 10**k) for k in range(10) for m in _DECADE)


def parse_preamble(reply: str) -> dict[str, Any]:
    """A ``WFMOutpre?`` reply (positional, or with headers ``:WFMOUTPRE:BYT_NR 2;...``) checked:
    numbers where numbers belong, a known encoding, a positive increment."""
    items = [item.strip() for item in _FIELDS_RE.findall(reply.strip())]
    values: dict[str, str] = {}
    for index, item in enumerate(items):
        item = item.lstrip(":")
        key, _, value = item.partition(" ") if item[:1].isalpha() and " " in item else ("", "", item)
        key = key.split(":")[-1].upper() or (PREAMBLE_FIELDS[index] if index < len(PREAMBLE_FIELDS) else "")
        values[key] = value.strip()
    missing = [key for key in PREAMBLE_FIELDS if key not in values]
    if missing:
        raise InstrumentError(f"malformed WFMOutpre? reply: no {', '.join(missing)} in {reply.strip()!r}")
    try:
        out: dict[str, Any] = {k: parse_int(values[k], k) for k in ("BYT_NR", "BIT_NR", "NR_PT", "PT_OFF")}
        out |= {k: parse_float(values[k], k) for k in ("XINCR", "XZERO", "YMULT", "YOFF", "YZERO")}
    except InstrumentError as exc:
        raise InstrumentError(f"{exc} (WFMOutpre? {reply.strip()!r})") from None
    out |= {k: values[k].upper().strip('"') for k in ("ENCDG", "BN_FMT", "BYT_OR")}
    if out["ENCDG"][:3] not in ("BIN", "ASC") or out["BN_FMT"] not in ("RI", "RP", "FP"):
        raise InstrumentError(f"WFMOutpre? has an unknown encoding: {reply.strip()!r}")
    if out["BYT_OR"] not in ("LSB", "MSB") or out["BYT_NR"] not in (1, 2, 4, 8) or out["NR_PT"] < 0:
        raise InstrumentError(
            f"WFMOutpre? has an invalid byte order, width or point count: {reply.strip()!r}"
        )
    if not (math.isfinite(out["XINCR"]) and out["XINCR"] > 0 and math.isfinite(out["YMULT"])):
        raise InstrumentError(f"WFMOutpre? XINCR must be positive and YMULT finite: {reply.strip()!r}")
    return out


def _dtype(pre: dict[str, Any]) -> np.dtype:
    kind = {"RI": "i", "RP": "u", "FP": "f"}[pre["BN_FMT"]]
    return np.dtype(("<" if pre["BYT_OR"] == "LSB" else ">") + kind + str(pre["BYT_NR"]))


class TektronixChannel(Channel):
    """One analog input; ``{ch}`` is the channel number."""

    enabled = flag_control(
        "DISplay:GLObal:CH{ch}:STATE?",
        "DISplay:GLObal:CH{ch}:STATE %d",
        """Control whether the channel is on (bool); only displayed channels are acquired.""",
        "channel state",
    )
    scale_V = range_control(
        "CH{ch}:SCAle?",
        "CH{ch}:SCAle %.6g",
        """Control the vertical scale in V/div (float; full scale is 10 divisions).""",
        (0.5e-3, 10.0),
        "channel scale",
    )
    offset_V = range_control(
        "CH{ch}:OFFSet?",
        "CH{ch}:OFFSet %.6g",
        """Control the offset (V, at the centre).""",
        (-10, 10),
        "offset",
    )
    position_div = range_control(
        "CH{ch}:POSition?",
        "CH{ch}:POSition %.6g",
        """Control the vertical position in divisions (float).""",
        (-5.0, 5.0),
        "channel position",
    )
    termination_ohm = range_control(
        "CH{ch}:TERmination?",
        "CH{ch}:TERmination %.6g",
        """Control the input termination (ohm: 50 or 1e6).""",
        (50.0, 1e6),
        "termination",
    )
    coupling = choice_control(
        "CH{ch}:COUPling?",
        "CH{ch}:COUPling %s",
        """Control the coupling (str: DC or AC).""",
        ["DC", "AC"],
        "coupling",
    )


class TektronixMSO(ErrorQueueMixin, SCPIMixin, Instrument):
    """Tektronix MSO4/5/6 with binary ``CURVe?`` transfers (the ``scope`` role)."""

    ERROR_QUERY = "EVMsg?"

    ch_1 = Instrument.ChannelCreator(TektronixChannel, 1)
    ch_2 = Instrument.ChannelCreator(TektronixChannel, 2)
    ch_3 = Instrument.ChannelCreator(TektronixChannel, 3)
    ch_4 = Instrument.ChannelCreator(TektronixChannel, 4)

    def __init__(self, adapter, name: str = "Tektronix MSO oscilloscope", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)
        self._model: ScopeModel | None = None

    @property
    def model(self) -> ScopeModel:
        """The answering series' data (asked once with ``*IDN?``)."""
        if self._model is None:
            self._model = model_of(self.id)
        return self._model

    @property
    def SAMPLE_RATES_Hz(self) -> tuple[float, ...]:  # noqa: N802 - the role's name
        return sample_rates(self.model)

    def check_errors(self) -> list[tuple[int, str]]:
        """``*ESR?`` (moves pending events to the queue), then ``EVMsg?`` until it is empty."""
        self.ask("*ESR?")
        return super().check_errors()

    def clear_errors(self) -> list[tuple[int, str]]:
        self.ask("*ESR?")
        return drain_errors(self.ask, self.ERROR_QUERY)

    horizontal_mode = choice_control(
        "HORizontal:MODe?",
        "HORizontal:MODe %s",
        """Control how rate and length are chosen (str: MAN sets both, AUTO from the scale).""",
        ["AUTO", "MAN", "CONST"],
        "horizontal mode",
    )
    sample_rate_Hz = range_control(
        "HORizontal:MODe:SAMPLERate?",
        "HORizontal:MODe:SAMPLERate %.12g",
        """Control the sample rate in manual mode (Sa/s).""",
        (1.0, 25e9),
        "sample rate",
    )
    record_points = range_control(
        "HORizontal:MODe:RECOrdlength?",
        "HORizontal:MODe:RECOrdlength %d",
        """Control the record length in manual mode (int).""",
        (1000, 62_500_000),
        "record length",
        kind=int,
    )
    horizontal_position_percent = range_control(
        "HORizontal:POSition?",
        "HORizontal:POSition %.6g",
        """Control where the trigger sits in the record (percent from its start).""",
        (0.0, 100.0),
        "horizontal position",
    )
    trigger_mode = choice_control(
        "TRIGger:A:MODe?",
        "TRIGger:A:MODe %s",
        """Control the trigger mode (str: NORM waits for a trigger, AUTO free-runs).""",
        ["NORM", "AUTO"],
        "trigger mode",
    )
    trigger_source = choice_control(
        "TRIGger:A:EDGE:SOUrce?",
        "TRIGger:A:EDGE:SOUrce %s",
        """Control the edge trigger source (str: AUX the auxiliary input, CH1..CH4, LINE).""",
        ["AUX", "CH1", "CH2", "CH3", "CH4", "LINE"],
        "trigger source",
    )
    trigger_slope = choice_control(
        "TRIGger:A:EDGE:SLOpe?",
        "TRIGger:A:EDGE:SLOpe %s",
        """Control the edge slope (str: RIS, FALL, EITH).""",
        ["RIS", "FALL", "EITH"],
        "trigger slope",
    )
    aux_trigger_level_V = range_control(
        "TRIGger:A:LEVel:AUXin?",
        "TRIGger:A:LEVel:AUXin %.6g",
        """Control the auxiliary trigger input's level (V).""",
        (-5.0, 5.0),
        "trigger level",
    )
    stop_after = choice_control(
        "ACQuire:STOPAfter?",
        "ACQuire:STOPAfter %s",
        """Control when acquiring stops (str: SEQ after one acquisition, RUNST runs on).""",
        ["SEQ", "RUNST"],
        "stop after",
    )
    acquiring = flag_control(
        "ACQuire:STATE?",
        "ACQuire:STATE %d",
        """Control acquiring (bool: 1 runs, 0 stops).""",
        "acquire state",
    )
    trigger_state = Instrument.measurement(
        "TRIGger:STATE?",
        """Get the trigger system's state (str: READY waits for the trigger, ARMED fills the
        pretrigger, SAVE stopped, TRIGGER acquiring, AUTO free-running).""",
        get_process=lambda reply: str(reply).strip().upper(),
        **RAW_REPLY,
    )
    acquisitions = Instrument.measurement(
        "ACQuire:NUMACq?",
        """Get how many acquisitions were made since ACQuire:STATE ON (int).""",
        get_process=int_reply("acquisition count"),
        **RAW_REPLY,
    )

    def channel(self, number: int) -> TektronixChannel:
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
        """One AUX-triggered capture of ``duration_s`` (after ``pretrigger_s``) on ``channel`` at
        ``sample_rate_Hz``, ``full_scale_V`` over 10 divisions around ``offset_V``. Returns the
        record's points, sample rate and start time."""
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
        points = max(math.ceil((duration_s + pretrigger_s) * rate - 1e-9), model.min_points)
        if points > model.memory_points:
            raise ConfigError(
                f"{points} points exceed the {model.family}'s {model.memory_points}-point record; "
                "shorten the capture or lower the sample rate"
            )
        self.acquiring = False
        ch.enabled = True
        ch.termination_ohm = 50.0 if impedance == "FIFT" else 1e6
        ch.coupling = "DC"
        ch.scale_V = full_scale_V / model.vertical_divisions
        ch.position_div = 0.0
        ch.offset_V = offset_V
        self.horizontal_mode = "MAN"
        self.sample_rate_Hz = rate
        self.record_points = points
        self.write("HORizontal:DELay:MODe 0")
        self.horizontal_position_percent = 100.0 * pretrigger_s * rate / points
        self.write("TRIGger:A:TYPe EDGe")
        self.trigger_source = "AUX"
        self.trigger_slope = "RIS"
        self.aux_trigger_level_V = trigger_level_V
        self.trigger_mode = "NORM"
        self.stop_after = "SEQ"
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
        """Start one acquisition (``ACQuire:STATE ON`` with ``STOPAfter SEQuence``)."""
        self.acquiring = True

    def waiting_for_trigger(self) -> bool:
        """True once the trigger system is READY; a scope that stopped without acquiring (a reset,
        a stray trigger) raises InstrumentError."""
        state = self.trigger_state
        if state == "READY":
            return True
        if state == "SAVE":
            raise InstrumentError(
                "the scope stopped before the trigger (was it reset, or triggered by something else?)"
            )
        return False

    def wait_acquired(self, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
        """Block until the sequence is done (``ACQuire:STATE?`` reads 0)."""
        poll_until(
            lambda: not self.acquiring,
            timeout_s,
            "scope did not finish acquiring: no trigger arrived? Check the AUX trigger cable "
            "and level, and that the AWG burst was triggered",
            first_s=poll_s,
            max_s=0.05,
        )

    # --- transfer ------------------------------------------------------------------------------
    def preamble(self) -> dict[str, Any]:
        """``WFMOutpre?`` checked (see :func:`parse_preamble`)."""
        return parse_preamble(self.ask("WFMOutpre?"))

    def read_waveform(self, channel: int, ascii: bool = False) -> Waveform:
        """The last record of ``channel`` in volts: 16-bit codes ``SRIbinary`` (or ASCII, slower)."""
        self.channel(channel)
        encoding = "ASCii" if ascii else "SRIbinary"
        self.write(
            f"HEADer 0;:DATa:SOUrce CH{channel};:DATa:ENCdg {encoding};:WFMOutpre:BYT_Nr 2;"
            ":DATa:STARt 1;:DATa:STOP 1000000000"
        )
        pre = self.preamble()
        points = pre["NR_PT"]
        if points == 0:
            raise InstrumentError("the scope has no acquired record: arm (arm_single) and trigger first")
        want = ("ASC", "RI", 2) if ascii else ("BIN", "RI", 2)
        if (pre["ENCDG"][:3], pre["BN_FMT"], pre["BYT_NR"]) != want:
            raise InstrumentError(
                f"scope transfers {pre['ENCDG']} {pre['BN_FMT']} x{pre['BYT_NR']}, asked {want}"
            )
        self.write("CURVe?")
        if ascii:
            reply = self.read().strip()
            codes = ascii_values(reply, "ASCII codes")
            if codes.size != points:
                raise InstrumentError(f"the scope sent {codes.size} codes; WFMOutpre? announced {points}")
        else:
            with termination_off(self):
                payload = read_block(self, expected_bytes=pre["BYT_NR"] * points)
            codes = np.frombuffer(payload, dtype=_dtype(pre)).astype(np.float64)
        volts = (codes - pre["YOFF"]) * pre["YMULT"] + pre["YZERO"]
        t0 = pre["XZERO"] - pre["PT_OFF"] * pre["XINCR"]
        return Waveform(volts, pre["XINCR"], "V", t0, {"channel": channel, "preamble": pre})


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
TEKTRONIX_MSO = DriverSpec(
    "tektronix-mso",
    "scope",
    TektronixMSO,
    r"TEKTRONIX",
    r"(MSO|DPO|LPD)[456]\d*[A-Z]*",
    TEK_MODELS["MSO5"],
    "Tektronix 4/5/6 Series MSO oscilloscope, binary CURVe? transfer",
)
