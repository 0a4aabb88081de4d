"""Emulated Keysight X-series signal analyser (N9020B MXA, Spectrum Analyzer mode), speaking real SCPI.

What it shows is computed from a spectrum function (the simulated device's one-sided power
spectral density in W/Hz at the analyser input, set as :attr:`EmulatedXSeries.spectrum` by whoever
wires it, e.g. ``lambda f: device.spectrum(conditions, f)``). Measurement model (documented
choices):

* **RBW filter**: Gaussian, ``-3 dB`` width = RBW (X-series swept RBW filters are Gaussian),
  unit peak gain, so a CW line reads its power and noise reads ``PSD * 1.0645 RBW`` (the filter's
  noise bandwidth). The PSD is sampled on a grid ``min(RBW, bucket) / 8`` fine (at most
  ``MAX_GRID`` points; a line narrower than the grid step is mis-sampled) and convolved.
* **Detector**: average (RMS) over each trace bucket ``span / (points - 1)``; the displayed power
  fluctuates as the power of Gaussian noise averaged over ``max(1, bucket / RBW)`` independent
  samples (a Gamma variate), which both the oscillator's line and the noise floor are.
* **Noise floor**: the displayed average noise level ``danl_dBm_per_Hz`` (MXA, no preamp,
  around 1 GHz), added in power to the signal.
* **Reference level and overload**: the attenuation follows the reference level, so the mixer
  compresses once the input (the device's power within the swept band) passes ``reference
  level + OVERLOAD_MARGIN_dB``: the trace clips there and the Questionable Integrity condition
  register sets bit 4 (input overload) until a sweep without overload.
* **Sweep time**: coupled (``:SWEep:TIME:AUTO ON``) it is ``2 span / RBW^2``, what a Gaussian
  RBW needs to settle; set shorter by hand, the measurement is flagged uncalibrated (Questionable
  Integrity bit 3, "Meas Uncal"), with its powers left as computed.
* **Sweeps**: ``:INITiate[:IMMediate]`` completes at once (``*OPC?`` answers 1); with
  ``:INITiate:CONTinuous ON`` every trace query sweeps anew. ``:AVERage:COUNt`` with
  ``:AVERage ON`` averages that many sweeps in power. ``:TRACe:DATA? TRACE1`` sends ASCII
  (default after ``*RST``) or ``:FORMat REAL,32`` / ``REAL,64`` blocks, byte order per
  ``:FORMat:BORDer NORMal|SWAPped``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from scipy.signal import fftconvolve

from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import (
    Arg,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    arg_int,
    compile_pattern,
    encode_block,
    format_float,
)

#: N9020B option 526.
MAX_FREQUENCY_Hz = 26.5e9
MAX_POINTS = 100_001
#: Finest grid the RBW convolution uses, in points.
MAX_GRID = 1 << 22
#: Above the reference level by this much the input overloads.
OVERLOAD_MARGIN_dB = 10.0
#: Noise bandwidth of a Gaussian filter of unit -3 dB width.
GAUSSIAN_NOISE_BANDWIDTH = math.sqrt(math.pi / (4 * math.log(2)))
#: Swept-analysis settling: the sweep time an RBW needs is SWEEP_TIME_K * span / RBW^2.
SWEEP_TIME_K = 2.0
OVERLOAD_BIT = 1 << 4
UNCALIBRATED_BIT = 1 << 3
#: The E24 series in tenths: the mantissas of the RBW steps below 3 MHz.
_E24_LOW = (10, 11, 12, 13, 15, 16, 18, 20, 22, 24, 27, 30)
_E24_HIGH = (33, 36, 39, 43, 47, 51, 56, 62, 68, 75, 82, 91)
#: The RBWs an X-series offers: 1 Hz .. 3 MHz in ~10 % steps, then 4, 5, 6 and 8 MHz.
RBW_STEPS_Hz = tuple(
    sorted(
        {t * 10**k / 10 for k in range(7) for t in _E24_LOW + _E24_HIGH if t * 10**k <= 3e7}
        | {4e6, 5e6, 6e6, 8e6}
    )
)


_UNITS = {
    "DB": 1.0,
    "HZ": 1.0,
    "KHZ": 1e3,
    "MHZ": 1e6,
    "GHZ": 1e9,
    "S": 1.0,
    "MS": 1e-3,
    "US": 1e-6,
    "NS": 1e-9,
}
_UNIT_RE = re.compile(r"^(\S+?)\s*(HZ|KHZ|MHZ|GHZ|S|MS|US|NS|DB)$", re.IGNORECASE)


def arg_quantity(arg: Arg, unit: str) -> float:
    """A number with an optional SCPI suffix unit of kind ``unit`` ("HZ" or "S"): ``10 MHz``."""
    match = _UNIT_RE.match(arg.text)
    if not match:
        return arg_float(arg)
    number, suffix = match.group(1), match.group(2).upper()
    if not suffix.endswith(unit):
        raise ScpiError(-131, f"{suffix!r} where a quantity in {unit} was expected")
    return arg_float(Arg(number.encode())) * _UNITS[suffix]


def nearest_rbw(rbw_Hz: float) -> float:
    """The analyser's RBW nearest to ``rbw_Hz`` (on a log scale)."""
    return min(RBW_STEPS_Hz, key=lambda r: abs(math.log(r / rbw_Hz)))


class EmulatedXSeries(ScpiInstrument):
    """X-series analyser emulator; ``spectrum(freqs_Hz) -> W/Hz`` is supplied by the wiring
    (None: only the noise floor). ``seed`` seeds the display noise."""

    IDN = "Keysight Technologies,N9020B,MY-EMULATED,A.33.03"

    def __init__(
        self,
        spectrum: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        seed: int = 0,
        danl_dBm_per_Hz: float = -150.0,
        lock=None,
    ) -> None:
        if not math.isfinite(danl_dBm_per_Hz):
            raise ValueError(f"danl_dBm_per_Hz must be a finite number, got {danl_dBm_per_Hz!r}")
        self.spectrum = spectrum
        self.danl_dBm_per_Hz = float(danl_dBm_per_Hz)
        self._rng = np.random.default_rng(seed)
        super().__init__(lock)

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.center_Hz = MAX_FREQUENCY_Hz / 2
        self.span_Hz = MAX_FREQUENCY_Hz
        self.rbw_Hz = 3e6
        self.vbw_Hz = 3e6
        self.points = 1001
        self.center_step_Hz = self.span_Hz / 10
        self.sweep_time_s = 0.1
        self.sweep_time_auto = True
        self.reference_level_dBm = 0.0
        self.continuous = True
        self.trace_format = "ASC"
        self.swapped = False
        self.unit = "DBM"
        self.average_on = False
        self.average_count = 100
        self.trace: np.ndarray | None = None  # dBm
        self._input_W = 0.0
        self.integrity = 0
        #: Every sweep's (centre, span, rbw, points), what a bus sniffer would reconstruct.
        self.sweep_log: list[tuple[float, float, float, int]] = []

    def _register(self) -> None:
        self.command("[SENSe]:FREQuency:CENTer", lambda a: self._set_center(self._freq(a)))
        self.query("[SENSe]:FREQuency:CENTer", lambda a: format_float(self.center_Hz))
        self.command("[SENSe]:FREQuency:SPAN", lambda a: self._set_span(self._freq(a)))
        self.query("[SENSe]:FREQuency:SPAN", lambda a: format_float(self.span_Hz))
        self.command("[SENSe]:FREQuency:STARt", lambda a: self._set_edges(self._freq(a), self.stop_Hz))
        self.query("[SENSe]:FREQuency:STARt", lambda a: format_float(self.start_Hz))
        self.command("[SENSe]:FREQuency:STOP", lambda a: self._set_edges(self.start_Hz, self._freq(a)))
        self.query("[SENSe]:FREQuency:STOP", lambda a: format_float(self.stop_Hz))
        for head in ("[SENSe]:BANDwidth[:RESolution]", "[SENSe]:BWIDth[:RESolution]"):
            self.command(head, self._set_rbw)
            self.query(head, lambda a: format_float(self.rbw_Hz))
        for head in ("[SENSe]:BANDwidth:VIDeo", "[SENSe]:BWIDth:VIDeo"):
            self.command(head, lambda a: setattr(self, "vbw_Hz", self._ranged(a, 1.0, 50e6)))
            self.query(head, lambda a: format_float(self.vbw_Hz))
        self.command(
            "[SENSe]:FREQuency:CENTer:STEP[:INCRement]",
            lambda a: setattr(self, "center_step_Hz", self._freq(a)),
        )
        self.query("[SENSe]:FREQuency:CENTer:STEP[:INCRement]", lambda a: format_float(self.center_step_Hz))
        self.command("[SENSe]:SWEep:TIME", self._set_sweep_time)
        self.query("[SENSe]:SWEep:TIME", lambda a: format_float(self.sweep_time()))
        self.command(
            "[SENSe]:SWEep:TIME:AUTO", lambda a: setattr(self, "sweep_time_auto", arg_bool(self._one(a)))
        )
        self.query("[SENSe]:SWEep:TIME:AUTO", lambda a: str(int(self.sweep_time_auto)))
        self.command("[SENSe]:SWEep:POINts", self._set_points)
        self.query("[SENSe]:SWEep:POINts", lambda a: str(self.points))
        self.command("[SENSe]:AVERage[:STATe]", lambda a: setattr(self, "average_on", arg_bool(self._one(a))))
        self.query("[SENSe]:AVERage[:STATe]", lambda a: str(int(self.average_on)))
        self.command(
            "[SENSe]:AVERage:COUNt", lambda a: setattr(self, "average_count", int(self._ranged(a, 1, 10_000)))
        )
        self.query("[SENSe]:AVERage:COUNt", lambda a: str(self.average_count))
        self.command("DISPlay:WINDow[1]:TRACe:Y[:SCALe]:RLEVel", self._set_reference)
        self.query(
            "DISPlay:WINDow[1]:TRACe:Y[:SCALe]:RLEVel", lambda a: format_float(self.reference_level_dBm)
        )
        self.command("UNIT:POWer", lambda a: setattr(self, "unit", arg_choice(self._one(a), ("DBM",))))
        self.query("UNIT:POWer", lambda a: self.unit)
        self.command("INITiate:CONTinuous", lambda a: setattr(self, "continuous", arg_bool(self._one(a))))
        self.query("INITiate:CONTinuous", lambda a: str(int(self.continuous)))
        self.command("INITiate[:IMMediate]", lambda a: self._no_args(a) or self._sweep())
        self.command("FORMat[:TRACe][:DATA]", self._set_format)
        self.query(
            "FORMat[:TRACe][:DATA]",
            lambda a: {"ASC": "ASC,8", "R32": "REAL,32", "R64": "REAL,64"}[self.trace_format],
        )
        self.command(
            "FORMat:BORDer",
            lambda a: setattr(self, "swapped", arg_choice(self._one(a), ("NORMal", "SWAPped")) == "SWAP"),
        )
        self.query("FORMat:BORDer", lambda a: "SWAP" if self.swapped else "NORM")
        self.query("TRACe[:DATA]", self._trace_data)
        self.query("STATus:QUEStionable:INTegrity:CONDition", lambda a: str(self.integrity))

    # --- settings --------------------------------------------------------------------------
    @property
    def start_Hz(self) -> float:
        return self.center_Hz - self.span_Hz / 2

    @property
    def stop_Hz(self) -> float:
        return self.center_Hz + self.span_Hz / 2

    def _freq(self, args: Sequence[Arg]) -> float:
        return self._ranged(args, 0.0, MAX_FREQUENCY_Hz)

    def _ranged(self, args: Sequence[Arg], low: float, high: float, unit: str = "HZ") -> float:
        value = arg_quantity(self._one(args), unit)
        if not low <= value <= high:
            raise ScpiError(-222, f"{value!r} is outside {low:g} .. {high:g}")
        return value

    def _set_center(self, center: float) -> None:
        # the span shrinks to keep the sweep inside 0 .. MAX_FREQUENCY_Hz, as on the instrument
        self.center_Hz = center
        self.span_Hz = min(self.span_Hz, 2 * center, 2 * (MAX_FREQUENCY_Hz - center))

    def _set_span(self, span: float) -> None:
        self.span_Hz = min(span, 2 * self.center_Hz, 2 * (MAX_FREQUENCY_Hz - self.center_Hz))

    def _set_edges(self, start: float, stop: float) -> None:
        if stop < start:
            raise ScpiError(-221, f"stop {stop:g} Hz below start {start:g} Hz")
        self.center_Hz, self.span_Hz = (start + stop) / 2, stop - start

    def required_sweep_time_s(self) -> float:
        """The shortest sweep the RBW filter can settle in: ``k span / RBW^2`` (k = 2, Gaussian)."""
        return max(SWEEP_TIME_K * self.span_Hz / self.rbw_Hz**2, 1e-6)

    def sweep_time(self) -> float:
        return self.required_sweep_time_s() if self.sweep_time_auto else self.sweep_time_s

    def _set_sweep_time(self, args: Sequence[Arg]) -> None:
        self.sweep_time_s = self._ranged(args, 1e-6, 4e3, "S")
        self.sweep_time_auto = False

    def _set_rbw(self, args: Sequence[Arg]) -> None:
        self.rbw_Hz = nearest_rbw(self._ranged(args, 1.0, 8e6))

    def _set_points(self, args: Sequence[Arg]) -> None:
        self.points = arg_int(self._one(args))
        if not 1 <= self.points <= MAX_POINTS:
            self.points = min(max(self.points, 1), MAX_POINTS)
            raise ScpiError(-222, f"sweep points must be 1 .. {MAX_POINTS}")

    def _set_reference(self, args: Sequence[Arg]) -> None:
        self.reference_level_dBm = self._ranged(args, -170.0, 30.0)

    def _set_format(self, args: Sequence[Arg]) -> None:
        if not args or len(args) > 2:
            raise ScpiError(-109 if not args else -108, "FORMat takes ASCii or REAL[,32|64]")
        kind = arg_choice(args[0], ("ASCii", "REAL", "INTeger"))
        bits = arg_int(args[1]) if len(args) == 2 else (8 if kind == "ASC" else 32)
        if kind == "INT" or (kind == "REAL" and bits not in (32, 64)):
            raise ScpiError(-224, "traces are sent as ASCii, REAL,32 or REAL,64")
        self.trace_format = "ASC" if kind == "ASC" else f"R{bits}"

    # --- measurement -----------------------------------------------------------------------
    def _sweep(self) -> None:
        sweeps = self.average_count if self.average_on else 1
        power_W = np.mean([self._one_sweep() for _ in range(sweeps)], axis=0)
        limit_W = 1e-3 * 10 ** ((self.reference_level_dBm + OVERLOAD_MARGIN_dB) / 10)
        overload = self._input_W > limit_W or bool(np.any(power_W > limit_W))
        uncal = self.sweep_time() < self.required_sweep_time_s() * (1 - 1e-9)
        self.integrity = (OVERLOAD_BIT if overload else 0) | (UNCALIBRATED_BIT if uncal else 0)
        self.trace = 10 * np.log10(np.minimum(power_W, limit_W) / 1e-3)
        self.sweep_log.append((self.center_Hz, self.span_Hz, self.rbw_Hz, self.points))

    def _one_sweep(self) -> np.ndarray:
        """Power (W) of each trace point: PSD through the RBW filter, averaged over the bucket."""
        n, rbw = self.points, self.rbw_Hz
        bucket = self.span_Hz / (n - 1) if n > 1 else 0.0
        step = min(rbw, bucket or rbw) / 8
        reach = 4 * rbw + bucket / 2
        lo, hi = max(self.start_Hz - reach, 0.0), self.stop_Hz + reach
        m = int(min(math.ceil((hi - lo) / step), MAX_GRID)) + 1
        grid = np.linspace(lo, hi, m)
        step = grid[1] - grid[0]
        noise_W_per_Hz = 1e-3 * 10 ** (self.danl_dBm_per_Hz / 10)
        psd = np.full(m, noise_W_per_Hz)
        self._input_W = 0.0
        if self.spectrum is not None:
            signal = np.asarray(self.spectrum(grid), dtype=float)
            if signal.shape != grid.shape or not np.all(np.isfinite(signal)) or np.any(signal < 0):
                raise ScpiError(-200, "the device spectrum is not a finite, non-negative W/Hz array")
            psd = psd + signal
            self._input_W = float(signal.sum() * step)
        half = int(math.ceil(4 * rbw / step))
        offsets = np.arange(-half, half + 1) * step
        kernel = np.exp(-4 * math.log(2) * (offsets / rbw) ** 2) * step
        filtered = fftconvolve(psd, kernel, mode="same")
        freqs = self.start_Hz + bucket * np.arange(n)
        if bucket > 0:  # the average detector: the mean of the filter output over each bucket
            cumulative = np.concatenate([[0.0], np.cumsum(filtered) * step])
            edges = np.clip(
                np.searchsorted(grid, np.concatenate([freqs - bucket / 2, [freqs[-1] + bucket / 2]])), 0, m
            )
            sums = np.diff(cumulative[edges])
            widths = np.diff(edges) * step
            power = np.where(widths > 0, sums / np.maximum(widths, 1e-300), np.interp(freqs, grid, filtered))
        else:
            power = np.interp(freqs, grid, filtered)
        samples = max(1.0, bucket / rbw)
        return power * self._rng.gamma(samples, 1.0 / samples, size=n)

    def _trace_data(self, args: Sequence[Arg]) -> str | bytes:
        if args and self._one(args).text.upper() not in ("TRACE1", "TRACE"):
            raise ScpiError(-224, "only TRACE1 holds a trace")
        if self.continuous or self.trace is None:
            self._sweep()
        assert self.trace is not None
        if self.trace_format == "ASC":
            return ",".join(f"{v:.6E}" for v in self.trace)
        dtype = ("<" if self.swapped else ">") + ("f4" if self.trace_format == "R32" else "f8")
        return encode_block(self.trace.astype(dtype).tobytes())


#: The R&S FSV's RBWs: 1 Hz .. 10 MHz in 1-2-3-5 steps.
FSV_RBW_STEPS_Hz = tuple(m * 10**k for k in range(8) for m in (1, 2, 3, 5) if m * 10**k <= 10e6)
FSV_POINTS = (101, 32_001)
#: STATus:QUEStionable:POWer: RF input overload.
FSV_RF_OVERLOAD_BIT = 1 << 0


class EmulatedFSV(EmulatedXSeries):
    """R&S FSV-30 emulator: the X-series measurement model behind the FSV's own command set
    (R&S FSV operating manual, remote control). What differs: 691 trace points after ``*RST``
    (101 .. 32001), RBWs in 1-2-3-5 steps to 10 MHz, averaging as trace mode ``AVERage`` over
    ``[SENSe:]SWEep:COUNt`` (or ``AVERage:COUNt``) sweeps (0: 10), traces as ``ASCii`` or
    ``REAL,32`` in Intel order (``FORMat:BORDer SWAPped`` after ``*RST``), ``TRACe<n>[:DATA]?``,
    the unit under ``CALCulate<n>:UNIT:POWer``, the detector, the input attenuation, and
    overload in ``STATus:QUEStionable:POWer`` bit 0 (no integrity register: the sweep time is
    coupled, so never uncalibrated unless set by hand)."""

    IDN = "Rohde&Schwarz,FSV-30,1307.9002K30/100001,3.40"
    #: What the FSV does not know of the X-series' tree.
    _NOT_FSV = ("STATus:QUEStionable:INTegrity:CONDition", "UNIT:POWer", "[SENSe]:AVERage[:STATe]")

    def _reset(self) -> None:
        super()._reset()
        self.points = 691
        self.swapped = True
        self.rbw_Hz = 3e6
        self.sweep_count = 0
        self.average_count = 10
        self.trace_mode = "WRIT"
        self.detector = "APE"
        self.attenuation_dB = 10.0

    def _register(self) -> None:
        def choice(name: str, choices: tuple[str, ...]) -> Callable[..., None]:
            return lambda a, *n: setattr(self, name, arg_choice(self._one(a), choices))

        self.command("DISPlay[:WINDow<n>]:TRACe<n>:MODE", self._set_trace_mode)
        self.query("DISPlay[:WINDow<n>]:TRACe<n>:MODE", lambda a, *n: self.trace_mode)
        for head in ("[SENSe]:SWEep:COUNt", "[SENSe]:AVERage<n>:COUNt"):
            self.command(head, self._set_sweep_count)
            self.query(head, lambda a, *n: str(self.sweep_count))
        self.command(
            "[SENSe]:DETector<n>[:FUNCtion]",
            choice("detector", ("APEak", "POSitive", "NEGative", "SAMPle", "RMS", "AVERage", "QPEak")),
        )
        self.query("[SENSe]:DETector<n>[:FUNCtion]", lambda a, *n: self.detector)
        self.command("CALCulate<n>:UNIT:POWer", choice("unit", ("DBM",)))
        self.query("CALCulate<n>:UNIT:POWer", lambda a, *n: self.unit)
        self.command(
            "INPut:ATTenuation", lambda a: setattr(self, "attenuation_dB", self._ranged(a, 0, 79, "DB"))
        )
        self.query("INPut:ATTenuation", lambda a: format_float(self.attenuation_dB))
        self.query("STATus:QUEStionable:POWer[:CONDition]", lambda a: str(self._power_condition()))
        self.query("TRACe<n>[:DATA]", lambda a, *n: self._trace_data(a))
        # the FSV answers numbers plainly ("30000", "1000000000"), not in the X-series' E format
        for head, attr in (
            ("[SENSe]:FREQuency:CENTer", "center_Hz"),
            ("[SENSe]:FREQuency:SPAN", "span_Hz"),
            ("[SENSe]:FREQuency:STARt", "start_Hz"),
            ("[SENSe]:FREQuency:STOP", "stop_Hz"),
            ("[SENSe]:BANDwidth[:RESolution]", "rbw_Hz"),
            ("[SENSe]:BWIDth[:RESolution]", "rbw_Hz"),
            ("[SENSe]:BANDwidth:VIDeo", "vbw_Hz"),
            ("[SENSe]:BWIDth:VIDeo", "vbw_Hz"),
            ("DISPlay[:WINDow<n>]:TRACe<n>:Y[:SCALe]:RLEVel", "reference_level_dBm"),
        ):
            self.query(head, lambda a, *n, attr=attr: f"{getattr(self, attr):.12g}")
        self.query("[SENSe]:SWEep:TIME", lambda a: f"{self.sweep_time():.12g}")
        self.command("DISPlay[:WINDow<n>]:TRACe<n>:Y[:SCALe]:RLEVel", lambda a, *n: self._set_reference(a))
        super()._register()
        dropped = {tuple(compile_pattern(p)) for p in self._NOT_FSV}
        self._commands = [(nodes, h) for nodes, h in self._commands if tuple(nodes) not in dropped]
        self._queries = [(nodes, h) for nodes, h in self._queries if tuple(nodes) not in dropped]

    def _set_trace_mode(self, args: Sequence[Arg], *suffixes: int) -> None:
        self.trace_mode = arg_choice(self._one(args), ("WRITe", "AVERage", "MAXHold", "MINHold", "VIEW"))
        self.average_on = self.trace_mode == "AVER"

    def _set_sweep_count(self, args: Sequence[Arg], *suffixes: int) -> None:
        count = arg_int(self._one(args))
        if not 0 <= count <= 32767:
            raise ScpiError(-222, "the sweep count must be 0 .. 32767")
        self.sweep_count = count
        self.average_count = count or 10

    def _set_rbw(self, args: Sequence[Arg]) -> None:
        wanted = self._ranged(args, 1.0, 10e6)
        self.rbw_Hz = min(FSV_RBW_STEPS_Hz, key=lambda r: abs(math.log(r / wanted)))

    def _set_points(self, args: Sequence[Arg]) -> None:
        points = arg_int(self._one(args))
        if not FSV_POINTS[0] <= points <= FSV_POINTS[1]:
            raise ScpiError(-222, f"sweep points must be {FSV_POINTS[0]} .. {FSV_POINTS[1]}")
        self.points = points

    def _set_format(self, args: Sequence[Arg]) -> None:
        if not args or len(args) > 2:
            raise ScpiError(-109 if not args else -108, "FORMat takes ASCii or REAL,32")
        kind = arg_choice(args[0], ("ASCii", "REAL"))
        bits = arg_int(args[1]) if len(args) == 2 else 32
        if kind == "REAL" and bits != 32:
            raise ScpiError(-224, "traces are sent as ASCii or REAL,32")
        self.trace_format = "ASC" if kind == "ASC" else "R32"

    def _power_condition(self) -> int:
        return FSV_RF_OVERLOAD_BIT if self.integrity & OVERLOAD_BIT else 0
