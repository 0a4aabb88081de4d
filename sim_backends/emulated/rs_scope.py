"""Emulated Rohde & Schwarz RTM3004 oscilloscope (4 channels), speaking its SCPI.

Acquisition model (choices where the models differ are the RTM3000's):

* **ADC**: 10 bits over the 10 vertical divisions (``full scale = 10 * CHANnel:SCALe``) around
  ``CHANnel:OFFSet`` (less ``POSition`` divisions); inputs beyond the screen clip to the end codes.
* **Time base**: ``TIMebase:RANGe`` (or ``SCALe``, 10 divisions), ``POSition`` (trigger to the
  reference) and ``REFerence`` (percent from the left): the record starts at
  ``position - reference% * range``. ``ACQuire:POINts`` sets the record length; the sample rate
  (``ACQuire:SRATe?``) is length over range, rounded up to a rate the scope offers (5 GSa/s over a
  1-2-5 sequence), and the length follows the rate.
* **Trigger**: the lab calls :meth:`trigger_input_edge` when the AWG fires (its trigger out drives
  the external input, ``TRIGger:A:SOURce EXTernanalog``, level ``TRIGger:A:LEVel5``).
  ``TRIGger:A:MODE AUTO`` acquires at once, ``NORMal`` waits; ``SINGle`` (``RUNSingle``) records
  one trigger. ``STATus:OPERation:CONDition?`` bit 3 is set while waiting for the trigger,
  ``ACQuire:STATe?`` reads RUN, STOP or COMP; ``*OPC?`` after ``SINGle`` answers when it completed.
* **Transfer**: ``FORMat[:DATA] ASCii | REAL,32``, ``FORMat:BORDer``, ``CHANnel<m>:DATA:HEADer?``
  (first and last sample time, length, 1 value per sample), ``CHANnel<m>:DATA?``.
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
MAX_SAMPLE_RATE_Hz = 5e9
MEMORY_POINTS = 80_000_000
ADC_BITS = 10
DIVISIONS = 10
#: rates offered, fastest first: 5 GSa/s over 1-2-5 decades
SAMPLE_RATES_Hz = tuple(MAX_SAMPLE_RATE_Hz / (m * 10**k) for k in range(10) for m in (1, 2, 5))
WAIT_TRIGGER_BIT = 8
AWG_TRIGGER_OUT_HIGH_V = 3.3


@dataclass
class Channel:
    state: bool = False
    scale_V: float = 0.1
    offset_V: float = 0.0
    position_div: float = 0.0
    coupling: str = "DCL"


class EmulatedRTM3000(ScpiInstrument):
    """RTM3004 emulator; ``acquire(times_s, channels, triggered)`` is supplied by the lab and
    returns each channel's input voltage at the record's sample times."""

    IDN = "Rohde&Schwarz,RTM3004,1335.8794K04/100001,01.550"
    ERROR_QUEUE_DEPTH = 30

    def __init__(self, lock=None) -> None:
        self.acquire: Callable[[np.ndarray, Sequence[int], bool], dict[int, np.ndarray]] | None = None
        super().__init__(lock)

    def _reset(self) -> None:
        self.channels = {n: Channel(state=(n == 1)) for n in range(1, N_CHANNELS + 1)}
        self.time_range_s = 1e-3
        self.time_position_s = 0.0
        self.reference_percent = 50.0
        self.points_setting = 10_000
        self.trigger_mode = "AUTO"
        self.trigger_source = "CH1"
        self.trigger_slope = "POS"
        self.trigger_levels = dict.fromkeys(range(1, 6), 0.0)
        self.data_format = "ASC"
        self.little_endian = False
        self.state = "STOP"
        self.single = False
        self.record: tuple[dict[int, np.ndarray], float, float] | None = None  # volts, dt, start
        self._opc_waiters: list = []

    def _register(self) -> None:
        ch = "CHANnel<n>:"
        self.command(ch + "STATe", lambda a, n: self._set(n, "state", arg_bool(self._one(a))))
        self.query(ch + "STATe", lambda a, n: str(int(self._chan(n).state)))
        self.command(ch + "SCALe", lambda a, n: self._set(n, "scale_V", self._positive(a)))
        self.query(ch + "SCALe", lambda a, n: format_float(self._chan(n).scale_V))
        self.command(ch + "RANGe", lambda a, n: self._set(n, "scale_V", self._positive(a) / DIVISIONS))
        self.query(ch + "RANGe", lambda a, n: format_float(self._chan(n).scale_V * DIVISIONS))
        self.command(ch + "OFFSet", lambda a, n: self._set(n, "offset_V", arg_float(self._one(a))))
        self.query(ch + "OFFSet", lambda a, n: format_float(self._chan(n).offset_V))
        self.command(ch + "POSition", lambda a, n: self._set(n, "position_div", arg_float(self._one(a))))
        self.query(ch + "POSition", lambda a, n: format_float(self._chan(n).position_div))
        couplings = ("DC", "DCLimit", "ACLimit", "GND")
        self.command(
            ch + "COUPling", lambda a, n: self._set(n, "coupling", arg_choice(self._one(a), couplings))
        )
        self.query(ch + "COUPling", lambda a, n: self._chan(n).coupling)
        self.query(ch + "DATA:HEADer", lambda a, n: self._header(n))
        self.query(ch + "DATA[:VALues]", lambda a, n: self._data(n))
        points = ("DEFault", "MAXimum", "DMAXimum")
        self.command(
            ch + "DATA:POINts", lambda a, n: self._chan(n) and arg_choice(self._one(a), points) and None
        )

        self.command("TIMebase:RANGe", lambda a: setattr(self, "time_range_s", self._positive(a)))
        self.query("TIMebase:RANGe", lambda a: format_float(self.time_range_s))
        self.command("TIMebase:SCALe", lambda a: setattr(self, "time_range_s", DIVISIONS * self._positive(a)))
        self.query("TIMebase:SCALe", lambda a: format_float(self.time_range_s / DIVISIONS))
        self.command("TIMebase:POSition", lambda a: setattr(self, "time_position_s", arg_float(self._one(a))))
        self.query("TIMebase:POSition", lambda a: format_float(self.time_position_s))
        self.command("TIMebase:REFerence", self._set_reference)
        self.query("TIMebase:REFerence", lambda a: format_float(self.reference_percent))
        self.command("ACQuire:POINts[:VALue]", self._set_points)
        self.query("ACQuire:POINts[:VALue]", lambda a: str(self.record_points()))
        self.query("ACQuire:SRATe", lambda a: format_float(self.sample_rate_Hz()))
        self.query("ACQuire:STATe", lambda a: self.state)

        self.command(
            "TRIGger:A:MODE",
            lambda a: setattr(self, "trigger_mode", arg_choice(self._one(a), ("AUTO", "NORMal"))),
        )
        self.query("TRIGger:A:MODE", lambda a: self.trigger_mode)
        sources = ("CH1", "CH2", "CH3", "CH4", "EXTernanalog", "LINE")
        self.command(
            "TRIGger:A:SOURce", lambda a: setattr(self, "trigger_source", arg_choice(self._one(a), sources))
        )
        self.query("TRIGger:A:SOURce", lambda a: self.trigger_source)
        slopes = ("POSitive", "NEGative", "EITHer")
        self.command(
            "TRIGger:A:EDGE:SLOPe", lambda a: setattr(self, "trigger_slope", arg_choice(self._one(a), slopes))
        )
        self.query("TRIGger:A:EDGE:SLOPe", lambda a: self.trigger_slope)
        self.command("TRIGger:A:LEVel<n>[:VALue]", self._set_level)
        self.query(
            "TRIGger:A:LEVel<n>[:VALue]", lambda a, n: format_float(self.trigger_levels[self._level(n)])
        )
        self.command("TRIGger:A:TYPE", lambda a: arg_choice(self._one(a), ("EDGE",)) and None)
        self.query("TRIGger:A:TYPE", lambda a: "EDGE")

        self.command("FORMat[:DATA]", self._set_format)
        self.query("FORMat[:DATA]", lambda a: "REAL,32" if self.data_format == "REAL" else "ASC,0")
        self.command(
            "FORMat:BORDer",
            lambda a: setattr(
                self, "little_endian", arg_choice(self._one(a), ("LSBFirst", "MSBFirst")) == "LSBF"
            ),
        )
        self.query("FORMat:BORDer", lambda a: "LSBF" if self.little_endian else "MSBF")

        self.command("RUN", lambda a: self._no_args(a) or self._arm(single=False))
        self.command("RUNContinous", lambda a: self._no_args(a) or self._arm(single=False))
        self.command("SINGle", lambda a: self._no_args(a) or self._arm(single=True))
        self.command("RUNSingle", lambda a: self._no_args(a) or self._arm(single=True))
        self.command("STOP", lambda a: self._no_args(a) or self._stop())
        self.query("STATus:OPERation:CONDition", lambda a: str(self.operation_condition()))

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

    def _set_reference(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args))
        if not 0 <= value <= 100:
            raise ScpiError(-222, f"reference {value:g} % outside 0 .. 100")
        self.reference_percent = value

    def _set_points(self, args: Sequence[Arg]) -> None:
        points = arg_int(self._one(args), {"MAXimum": MEMORY_POINTS, "MINimum": 1000})
        if not 1000 <= points <= MEMORY_POINTS:
            raise ScpiError(-222, f"{points} points outside 1000 .. {MEMORY_POINTS}")
        self.points_setting = points

    @staticmethod
    def _level(n: int) -> int:
        if not 1 <= n <= 5:
            raise ScpiError(-114, f"trigger level {n} does not exist (1..4 channels, 5 external)")
        return n

    def _set_level(self, args: Sequence[Arg], n: int) -> None:
        self.trigger_levels[self._level(n)] = arg_float(self._one(args))

    def _set_format(self, args: Sequence[Arg]) -> None:
        if not args or len(args) > 2:
            raise ScpiError(-109 if not args else -108, "expected ASCii or REAL,32")
        kind = arg_choice(args[0], ("ASCii", "REAL"))
        width = arg_int(args[1]) if len(args) == 2 else (32 if kind == "REAL" else 0)
        if (kind, width) not in (("ASC", 0), ("REAL", 32)):
            raise ScpiError(-224, f"format {kind},{width} is not ASCii or REAL,32")
        self.data_format = kind

    # --- acquisition -----------------------------------------------------------------------
    def sample_rate_Hz(self) -> float:
        wanted = self.points_setting / self.time_range_s
        faster = [r for r in SAMPLE_RATES_Hz if r >= wanted * (1 - 1e-9)]
        return faster[-1] if faster else MAX_SAMPLE_RATE_Hz

    def record_points(self) -> int:
        return min(max(round(self.time_range_s * self.sample_rate_Hz()), 1000), MEMORY_POINTS)

    def record_start_s(self) -> float:
        start = self.time_position_s - self.reference_percent / 100 * self.time_range_s
        return round(start, 15) + 0.0

    def operation_condition(self) -> int:
        return WAIT_TRIGGER_BIT if self.state == "RUN" else 0

    def _arm(self, single: bool) -> None:
        self.state, self.single = "RUN", single
        if self.trigger_mode == "AUTO":
            self._capture(triggered=False)

    def _stop(self) -> None:
        self.state = "STOP"
        self._complete_opc()

    def trigger_input_edge(self, source: str = "EXT", high_V: float = AWG_TRIGGER_OUT_HIGH_V) -> bool:
        """A rising edge (0 V -> ``high_V``) reached the external trigger input (``source``
        ``"EXT"``); capture if the trigger setup fires on it. Returns whether it did."""
        with self.lock:
            if self.state != "RUN" or source != "EXT" or self.trigger_source != "EXT":
                return False
            if self.trigger_slope not in ("POS", "EITH") or not 0.0 < self.trigger_levels[5] < high_V:
                return False
            self._capture(triggered=True)
            return True

    def _capture(self, triggered: bool) -> None:
        points, dt, x0 = self.record_points(), 1.0 / self.sample_rate_Hz(), self.record_start_s()
        times = x0 + dt * np.arange(points)
        shown = [n for n, c in self.channels.items() if c.state]
        analog = (
            self.acquire(times, shown, triggered) if self.acquire else {n: np.zeros(points) for n in shown}
        )
        volts = {}
        half = 2 ** (ADC_BITS - 1)
        for n in shown:
            c = self.channels[n]
            lsb = DIVISIONS * c.scale_V / 2**ADC_BITS
            centre = c.offset_V - c.position_div * c.scale_V
            signal = analog[n] - (analog[n].mean() if c.coupling == "ACL" else 0.0)
            codes = np.clip(np.rint((signal - centre) / lsb), -half, half - 1)
            volts[n] = (codes, lsb, centre)
        hit = self.faults.fire("capture") if self.faults is not None else None
        if hit is not None:  # overrange: the input left the screen for a stretch of the record
            run = min(points, max(16, points // 50))
            first = int(hit[1].integers(0, points - run + 1))
            for codes, _, _ in volts.values():
                codes[first : first + run] = half - 1
        self.record = ({n: codes * lsb + centre for n, (codes, lsb, centre) in volts.items()}, dt, x0)
        if self.single:
            self.state = "COMP"
            self._complete_opc()

    def operation_pending(self) -> bool:
        """``*OPC?`` answers only once a pending ``SINGle`` completed."""
        return self.state == "RUN" and self.single

    # --- transfer --------------------------------------------------------------------------
    def _samples(self, n: int) -> np.ndarray | None:
        self._chan(n)
        if self.record is None or n not in self.record[0]:
            return None
        return self.record[0][n]

    def _header(self, n: int) -> str:
        samples = self._samples(n)
        if samples is None:
            return f"{format_float(self.record_start_s())},{format_float(self.record_start_s())},0,1"
        _, dt, x0 = self.record  # type: ignore[misc]
        return f"{format_float(x0)},{format_float(x0 + dt * (samples.size - 1))},{samples.size},1"

    def _data(self, n: int) -> bytes:
        samples = self._samples(n)
        if samples is None:
            self.push_error(ScpiError(-222, f"channel {n} holds no acquired data; acquire with SINGle first"))
            samples = np.zeros(0)
        if self.data_format == "ASC":
            return ",".join(f"{v:.6E}" for v in samples).encode()
        return encode_block(samples.astype("<f4" if self.little_endian else ">f4").tobytes())
