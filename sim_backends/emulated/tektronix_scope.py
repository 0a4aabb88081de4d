"""Emulated Tektronix MSO54 (5 Series MSO, 4 channels), speaking its SCPI.

Acquisition model (choices where the series differ are the MSO5's):

* **ADC**: 12 bits over the 10 vertical divisions (``full scale = 10 * CH<n>:SCAle``) around
  ``CH<n>:OFFSet`` (less ``POSition`` divisions); inputs beyond the screen clip to the end codes.
  Transfers carry 16-bit codes (the 12-bit code times 16; ``WFMOutpre:BYT_Nr 1`` sends the top
  byte), ``YMUlt = 10 * scale / 65536``, ``YOFf = 0``, ``YZEro`` = offset less position.
* **Horizontal**: ``HORizontal:MODe MANual`` with ``HORizontal:MODe:SAMPLERate`` (rounded up to a
  rate the scope offers: 6.25 GSa/s over a 1-2-5 sequence) and ``HORizontal:MODe:RECOrdlength``;
  ``HORizontal:POSition`` puts the trigger that percent into the record (``XZEro``).
* **Trigger**: the lab calls :meth:`trigger_input_edge` when the AWG fires (its trigger out drives
  the AUX input: ``TRIGger:A:EDGE:SOUrce AUXiliary``, ``TRIGger:A:LEVel:AUXin``). ``TRIGger:A:MODe
  AUTO`` acquires at once, ``NORMal`` waits. ``ACQuire:STATE ON`` starts; with ``ACQuire:STOPAfter
  SEQuence`` one acquisition stops it. ``TRIGger:STATE?`` reads READY while waiting, SAVE when
  stopped; ``*OPC?`` after ``ACQuire:STATE ON`` answers when the sequence is done.
* **Transfer**: ``DATa:SOUrce``, ``DATa:ENCdg`` (ASCii, RIBinary, RPBinary, SRIbinary, SRPbinary,
  FPBinary, SFPbinary), ``DATa:STARt``/``STOP`` (clamped to the record), ``WFMOutpre?`` and its
  fields, ``CURVe?``. Errors are events: ``EVMsg?`` reads one, ``0,"No events to report - queue
  empty"`` when none (``*ESR?`` as usual; the event queue needs no ``*ESR?`` to fill here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import (
    Arg,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    arg_int,
    encode_block,
    format_float,
)

N_CHANNELS = 4
MAX_SAMPLE_RATE_Hz = 6.25e9
MEMORY_POINTS = 62_500_000
ADC_BITS = 12
DIVISIONS = 10
#: rates offered, fastest first: 6.25 GSa/s over 1-2-5 decades
SAMPLE_RATES_Hz = tuple(MAX_SAMPLE_RATE_Hz / (m * 10**k) for k in range(10) for m in (1, 2, 5))
AWG_TRIGGER_OUT_HIGH_V = 3.3
#: DATa:ENCdg -> (WFMOutpre:ENCdg, BN_Fmt, BYT_Or)
ENCODINGS = {
    "ASC": ("ASCII", "RI", "MSB"),
    "RIB": ("BINARY", "RI", "MSB"),
    "RPB": ("BINARY", "RP", "MSB"),
    "SRI": ("BINARY", "RI", "LSB"),
    "SRP": ("BINARY", "RP", "LSB"),
    "FPB": ("BINARY", "FP", "MSB"),
    "SFP": ("BINARY", "FP", "LSB"),
}

#: the WFMOutpre fields answered one at a time (``WFMOutpre:YMUlt?``)
PREAMBLE_QUERIES = ("BYT_Nr", "BIT_Nr", "ENCdg", "BN_Fmt", "BYT_Or", "WFId", "NR_Pt", "PT_Fmt")
PREAMBLE_QUERIES += ("XUNit", "XINcr", "XZEro", "PT_Off", "YUNit", "YMUlt", "YOFf", "YZEro")


@dataclass
class Channel:
    display: bool = False
    scale_V: float = 0.1
    offset_V: float = 0.0
    position_div: float = 0.0
    termination_ohm: float = 1e6
    coupling: str = "DC"


class EmulatedMSO5(ScpiInstrument):
    """MSO54 emulator; ``acquire(times_s, channels, triggered)`` is supplied by the lab and
    returns each channel's input voltage at the record's sample times."""

    IDN = "TEKTRONIX,MSO54,C100001,CF:91.1CT FV:1.30.2.111"
    ERROR_QUEUE_DEPTH = 30

    def __init__(self, lock=None) -> None:
        self.acquire: Callable[[np.ndarray, Sequence[int], bool], dict[int, np.ndarray]] | None = None
        super().__init__(lock)

    def _reset(self) -> None:
        self.channels = {n: Channel(display=(n == 1)) for n in range(1, N_CHANNELS + 1)}
        self.horizontal_mode = "AUTO"
        self.rate_Hz = 6.25e9
        self.points = 10_000
        self.position_percent = 50.0
        self.trigger_source = "CH1"
        self.trigger_slope = "RIS"
        self.aux_level_V = 0.0
        self.trigger_mode = "AUTO"
        self.stop_after = "RUNST"
        self.running = False
        self.acquisitions = 0
        self.header = False
        self.data_source = 1
        self.encoding = "RIB"
        self.byte_width = 1
        self.data_start, self.data_stop = 1, 10_000
        self.record: tuple[dict[int, np.ndarray], float, float] | None = None  # codes, dt, start
        self._opc_waiters: list = []

    def _register(self) -> None:
        ch = "CH<n>:"
        self.command(
            "DISplay:GLObal:CH<n>:STATE", lambda a, n: self._set(n, "display", arg_bool(self._one(a)))
        )
        self.query("DISplay:GLObal:CH<n>:STATE", lambda a, n: str(int(self._chan(n).display)))
        self.command("SELect:CH<n>", lambda a, n: self._set(n, "display", arg_bool(self._one(a))))
        self.query("SELect:CH<n>", lambda a, n: str(int(self._chan(n).display)))
        self.command(ch + "SCAle", lambda a, n: self._set(n, "scale_V", self._positive(a)))
        self.query(ch + "SCAle", lambda a, n: format_float(self._chan(n).scale_V))
        self.command(ch + "OFFSet", lambda a, n: self._set(n, "offset_V", arg_float(self._one(a))))
        self.query(ch + "OFFSet", lambda a, n: format_float(self._chan(n).offset_V))
        self.command(ch + "POSition", lambda a, n: self._set(n, "position_div", arg_float(self._one(a))))
        self.query(ch + "POSition", lambda a, n: format_float(self._chan(n).position_div))
        self.command(ch + "TERmination", self._set_termination)
        self.query(ch + "TERmination", lambda a, n: format_float(self._chan(n).termination_ohm))
        self.command(
            ch + "COUPling", lambda a, n: self._set(n, "coupling", arg_choice(self._one(a), ("DC", "AC")))
        )
        self.query(ch + "COUPling", lambda a, n: self._chan(n).coupling)

        self.command(
            "HORizontal:MODe",
            lambda a: setattr(
                self, "horizontal_mode", arg_choice(self._one(a), ("AUTO", "MANual", "CONSTant"))
            ),
        )
        self.query("HORizontal:MODe", lambda a: self.horizontal_mode)
        self.command("HORizontal:MODe:SAMPLERate", self._set_rate)
        self.query("HORizontal:MODe:SAMPLERate", lambda a: format_float(self.rate_Hz))
        self.query("HORizontal:SAMPLERate", lambda a: format_float(self.rate_Hz))
        self.command("HORizontal:MODe:RECOrdlength", self._set_points)
        self.query("HORizontal:MODe:RECOrdlength", lambda a: str(self.points))
        self.query("HORizontal:RECOrdlength", lambda a: str(self.points))
        self.command("HORizontal:POSition", self._set_position)
        self.query("HORizontal:POSition", lambda a: format_float(self.position_percent))
        self.command("HORizontal:DELay:MODe", lambda a: arg_bool(self._one(a)) and None)
        self.query("HORizontal:DELay:MODe", lambda a: "0")

        self.command("TRIGger:A:TYPe", lambda a: arg_choice(self._one(a), ("EDGe",)) and None)
        self.query("TRIGger:A:TYPe", lambda a: "EDGE")
        sources = ("CH1", "CH2", "CH3", "CH4", "AUXiliary", "LINE")
        self.command(
            "TRIGger:A:EDGE:SOUrce",
            lambda a: setattr(self, "trigger_source", arg_choice(self._one(a), sources)),
        )
        self.query("TRIGger:A:EDGE:SOUrce", lambda a: self.trigger_source)
        slopes = ("RISe", "FALL", "EITHer")
        self.command(
            "TRIGger:A:EDGE:SLOpe", lambda a: setattr(self, "trigger_slope", arg_choice(self._one(a), slopes))
        )
        self.query("TRIGger:A:EDGE:SLOpe", lambda a: self.trigger_slope)
        self.command("TRIGger:A:LEVel:AUXin", lambda a: setattr(self, "aux_level_V", arg_float(self._one(a))))
        self.query("TRIGger:A:LEVel:AUXin", lambda a: format_float(self.aux_level_V))
        self.command(
            "TRIGger:A:MODe",
            lambda a: setattr(self, "trigger_mode", arg_choice(self._one(a), ("AUTO", "NORMal"))),
        )
        self.query("TRIGger:A:MODe", lambda a: self.trigger_mode)
        self.query("TRIGger:STATE", lambda a: self.trigger_state())

        self.command(
            "ACQuire:STOPAfter",
            lambda a: setattr(self, "stop_after", arg_choice(self._one(a), ("RUNSTop", "SEQuence"))),
        )
        self.query("ACQuire:STOPAfter", lambda a: "SEQUENCE" if self.stop_after == "SEQ" else "RUNSTOP")
        self.command("ACQuire:STATE", self._set_state)
        self.query("ACQuire:STATE", lambda a: str(int(self.running)))
        self.query("ACQuire:NUMACq", lambda a: str(self.acquisitions))
        self.command("ACQuire:MODe", lambda a: arg_choice(self._one(a), ("SAMple", "HIRes")) and None)

        self.command("HEADer", lambda a: setattr(self, "header", arg_bool(self._one(a))))
        self.query("HEADer", lambda a: str(int(self.header)))
        self.command("VERBose", lambda a: arg_bool(self._one(a)) and None)
        self.command("DATa:SOUrce", self._set_source)
        self.query("DATa:SOUrce", lambda a: f"CH{self.data_source}")
        names = ("ASCii", "RIBinary", "RPBinary", "SRIbinary", "SRPbinary", "FPBinary", "SFPbinary")
        self.command("DATa:ENCdg", self._set_encoding(names))
        self.query(
            "DATa:ENCdg", lambda a: next(n.upper() for n in names if n.upper().startswith(self.encoding))
        )
        self.command("DATa:STARt", lambda a: setattr(self, "data_start", max(1, arg_int(self._one(a)))))
        self.query("DATa:STARt", lambda a: str(self.data_start))
        self.command("DATa:STOP", lambda a: setattr(self, "data_stop", max(1, arg_int(self._one(a)))))
        self.query("DATa:STOP", lambda a: str(self.data_stop))
        self.command("WFMOutpre:BYT_Nr", self._set_width)
        for name in PREAMBLE_QUERIES:
            self.query(f"WFMOutpre:{name}", self._preamble_field(name.upper()))
        self.query("WFMOutpre", lambda a: self._preamble_reply())
        self.query("CURVe", lambda a: self._curve())
        self.query("EVMsg", lambda a: self._next_event())
        self.query("EVQty", lambda a: str(self.error_count()))

    # --- settings --------------------------------------------------------------------------
    def _chan(self, n: int) -> Channel:
        if n not in self.channels:
            raise ScpiError(-114, f"channel {n} does not exist (1..{N_CHANNELS})")
        return self.channels[n]

    def _set(self, n: int, name: str, value) -> None:
        setattr(self._chan(n), name, value)

    def _positive(self, args: Sequence[Arg]) -> float:
        value = arg_float(self._one(args))
        if not value > 0:
            raise ScpiError(-222, f"value must be positive, got {value:g}")
        return value

    def _set_termination(self, args: Sequence[Arg], n: int) -> None:
        value = arg_float(self._one(args))
        if value not in (50.0, 1e6):
            raise ScpiError(-222, f"termination {value:g} ohm is not 50 or 1.0E+6")
        self._set(n, "termination_ohm", value)

    def _set_rate(self, args: Sequence[Arg]) -> None:
        rate = arg_float(self._one(args), {"MAXimum": MAX_SAMPLE_RATE_Hz})
        if not 0 < rate <= MAX_SAMPLE_RATE_Hz:
            raise ScpiError(-222, f"sample rate {rate:g} Sa/s outside 0 .. {MAX_SAMPLE_RATE_Hz:g}")
        self.rate_Hz = min(r for r in SAMPLE_RATES_Hz if r >= rate * (1 - 1e-12))

    def _set_points(self, args: Sequence[Arg]) -> None:
        points = arg_int(self._one(args))
        if not 1000 <= points <= MEMORY_POINTS:
            raise ScpiError(-222, f"record length {points} outside 1000 .. {MEMORY_POINTS}")
        self.points = points

    def _set_position(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args))
        if not 0 <= value <= 100:
            raise ScpiError(-222, f"horizontal position {value:g} % outside 0 .. 100")
        self.position_percent = value

    def _set_source(self, args: Sequence[Arg]) -> None:
        text = self._one(args).text.upper()
        if not (text.startswith("CH") and text[2:].isdigit() and int(text[2:]) in self.channels):
            raise ScpiError(-224, f"{text!r} is not an analog channel (CH1..CH{N_CHANNELS})")
        self.data_source = int(text[2:])

    def _set_encoding(self, names: Sequence[str]) -> Callable[[Sequence[Arg]], None]:
        def handler(args: Sequence[Arg]) -> None:
            self.encoding = arg_choice(self._one(args), names)[:3]
            if self.encoding in ("FPB", "SFP"):
                self.byte_width = 4
            elif self.byte_width == 4:
                self.byte_width = 2

        return handler

    def _set_width(self, args: Sequence[Arg]) -> None:
        width = arg_int(self._one(args))
        allowed = (4,) if self.encoding in ("FPB", "SFP") else (1, 2)
        if width not in allowed:
            raise ScpiError(-222, f"BYT_Nr {width} not one of {allowed} for this encoding")
        self.byte_width = width

    # --- acquisition -----------------------------------------------------------------------
    def trigger_state(self) -> str:
        if not self.running:
            return "SAVE"
        return "AUTO" if self.trigger_mode == "AUTO" else "READY"

    def _set_state(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        on = arg_choice(arg, ("RUN", "STOP", "ON", "OFF", "1", "0", "NEXT")) in ("RUN", "ON", "1", "NEXT")
        if not on:
            self.running = False
            self._complete_opc()
            return
        self.running, self.acquisitions = True, 0
        if self.trigger_mode == "AUTO":
            self._capture(triggered=False)

    def trigger_input_edge(self, source: str = "EXT", high_V: float = AWG_TRIGGER_OUT_HIGH_V) -> bool:
        """A rising edge (0 V -> ``high_V``) reached the AUX trigger input (the lab's ``"EXT"``);
        capture if the trigger setup fires on it. Returns whether it did."""
        with self.lock:
            if not self.running or source != "EXT" or self.trigger_source != "AUX":
                return False
            if self.trigger_slope not in ("RIS", "EITH") or not 0.0 < self.aux_level_V < high_V:
                return False
            self._capture(triggered=True)
            return True

    def _capture(self, triggered: bool) -> None:
        points, dt = self.points, 1.0 / self.rate_Hz
        x0 = round(-self.position_percent / 100 * points * dt, 15) + 0.0
        times = x0 + dt * np.arange(points)
        shown = [n for n, c in self.channels.items() if c.display]
        analog = (
            self.acquire(times, shown, triggered) if self.acquire else {n: np.zeros(points) for n in shown}
        )
        step, half = 2 ** (16 - ADC_BITS), 2 ** (ADC_BITS - 1)
        codes = {}
        for n in shown:
            c = self.channels[n]
            lsb = DIVISIONS * c.scale_V / 2**ADC_BITS
            signal = analog[n] - (analog[n].mean() if c.coupling == "AC" else 0.0)
            adc = np.clip(np.rint((signal - self._yzero(c)) / lsb), -half, half - 1)
            codes[n] = (adc * step).astype(np.int16)
        hit = self.faults.fire("capture") if self.faults is not None else None
        if hit is not None:  # overrange: the input left the screen for a stretch of the record
            run = min(points, max(16, points // 50))
            first = int(hit[1].integers(0, points - run + 1))
            for n in shown:
                codes[n][first : first + run] = (half - 1) * step
        self.record = (codes, dt, x0)
        self.acquisitions += 1
        if self.stop_after == "SEQ":
            self.running = False
            self._complete_opc()

    @staticmethod
    def _yzero(c: Channel) -> float:
        return c.offset_V - c.position_div * c.scale_V

    def operation_pending(self) -> bool:
        """``*OPC?`` answers only once a running single sequence is done."""
        return self.running and self.stop_after == "SEQ"

    def _next_event(self) -> str:
        """``EVMsg?``: Tektronix event numbers are positive (``222,"Data out of range..."``)."""
        entry = self._next_error()
        code, _, message = entry.partition(",")
        if int(code) == 0:
            return '0,"No events to report - queue empty"'
        return f"{abs(int(code))},{message}"

    # --- transfer --------------------------------------------------------------------------
    def _span(self) -> tuple[np.ndarray | None, int]:
        """The source's codes from DATa:STARt to DATa:STOP (clamped), and the first index."""
        if self.record is None or self.data_source not in self.record[0]:
            return None, 0
        codes = self.record[0][self.data_source]
        first = min(self.data_start, codes.size) - 1
        return codes[first : max(first, min(self.data_stop, codes.size))], first

    def _preamble(self) -> dict[str, str]:
        codes, first = self._span()
        c = self.channels[self.data_source]
        dt, x0 = (self.record[1], self.record[2]) if self.record is not None else (1 / self.rate_Hz, 0.0)
        encoding, fmt, order = ENCODINGS[self.encoding]
        width = self.byte_width
        points = 0 if codes is None else codes.size
        ymult = 1.0 if fmt == "FP" else DIVISIONS * c.scale_V / 2 ** (8 * min(width, 2))
        return {
            "BYT_NR": str(width),
            "BIT_NR": str(8 * width),
            "ENCDG": encoding,
            "BN_FMT": fmt,
            "BYT_OR": order,
            "WFID": f'"Ch{self.data_source}, {c.coupling} coupling, {c.scale_V:.4g}V/div, {points} points"',
            "NR_PT": str(points),
            "PT_FMT": "Y",
            "PT_ORDER": "LINEAR",
            "XUNIT": '"s"',
            "XINCR": format_float(dt),
            "XZERO": format_float(x0 + first * dt),
            "PT_OFF": "0",
            "YUNIT": '"V"',
            "YMULT": format_float(ymult),
            "YOFF": format_float(2.0 ** (8 * width - 1) if fmt == "RP" else 0.0),  # unsigned: mid-code
            "YZERO": format_float(0.0 if fmt == "FP" else self._yzero(c)),
            "DOMAIN": "TIME",
            "WFMTYPE": "ANALOG",
            "CENTERFREQUENCY": format_float(0.0),
            "SPAN": format_float(0.0),
            "REFLEVEL": format_float(0.0),
        }

    def _preamble_field(self, key: str) -> Callable[[Sequence[Arg]], str]:
        return lambda args: self._no_args(args) or self._preamble()[key]

    def _preamble_reply(self) -> str:
        fields = self._preamble()
        if self.header:
            return ":WFMOUTPRE:" + ";".join(f"{key} {value}" for key, value in fields.items())
        return ";".join(fields.values())

    def _curve(self) -> bytes:
        codes, _ = self._span()
        if codes is None or codes.size == 0:
            self.push_error(ScpiError(-222, f"CH{self.data_source} holds no acquired data; acquire first"))
            return encode_block(b"")
        encoding, fmt, order = ENCODINGS[self.encoding]
        if fmt == "FP":
            c = self.channels[self.data_source]
            values = codes * (DIVISIONS * c.scale_V / 2**16) + self._yzero(c)
            return encode_block(values.astype(("<" if order == "LSB" else ">") + "f4").tobytes())
        wide = codes.astype(np.int64)
        if self.byte_width == 1:
            wide >>= 8
        if fmt == "RP":
            wide += 2 ** (8 * self.byte_width - 1)
        if encoding == "ASCII":
            return ",".join(map(str, wide.tolist())).encode()
        kind = ("<" if order == "LSB" else ">") + ("i" if fmt == "RI" else "u") + str(self.byte_width)
        return encode_block(wide.astype(kind).tobytes())
