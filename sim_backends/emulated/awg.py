"""Emulated Keysight 33500B-series waveform generator (channel 1), speaking real SCPI.

State kept like the instrument: function, arbitrary-waveform volatile memory (named int16 DAC
records), arb sample rate, amplitude (Vpp into the *configured* load) and offset, output load
setting, output relay, burst configuration, trigger source and the byte order of binary
transfers (``FORM:BORD NORM|SWAP``). Limits follow the 33500B data sheet: 8 samples to
``memory_samples`` points, 1 uSa/s to 160 MSa/s, 1 mVpp to 10 Vpp and |offset| + Vpp/2 <= 5 V
into 50 ohm (both doubled for a high-Z load setting); violations queue the SCPI error the
instrument would report and leave the setting unchanged.

The electrical output is exposed to the lab wiring as an open-circuit EMF behind 50 ohm
(:meth:`emf_V`): the display voltage refers to the load setting, so a 50-ohm setting into a
high-impedance device doubles, as on the real instrument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import (
    Arg,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    decode_int16_block,
    format_float,
)

SOURCE_IMPEDANCE_OHM = 50.0
DAC_FULL_SCALE = 32767
_ARB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")
_FUNCTIONS = ("SINusoid", "SQUare", "RAMP", "DC", "ARBitrary")


class Emulated33500B(ScpiInstrument):
    """One-channel 33500B emulator. ``on_trigger`` is called (under the lab lock) whenever the
    instrument fires a trigger: ``*TRG`` with BUS source, or ``TRIG`` (immediate)."""

    IDN = "Agilent Technologies,33522B,MY-EMULATED,4.03-1.19-2.00-52-00"
    MAX_SAMPLE_RATE_Hz = 160e6
    MIN_SAMPLE_RATE_Hz = 1e-6
    MIN_ARB_SAMPLES = 8
    MAX_VPP_50_OHM = 10.0
    MIN_VPP_50_OHM = 1e-3
    MAX_PEAK_50_OHM = 5.0

    #: ASCII arbs (``DATA:ARB name, v1, v2, ...``) need room: about 20 bytes a sample
    max_text_bytes = 32 << 20

    def __init__(self, memory_samples: int = 16_000_000, lock=None) -> None:
        self.memory_samples = int(memory_samples)
        self.max_block_bytes = 2 * self.memory_samples  # one int16 arb filling the memory
        self.on_trigger: Callable[[], None] | None = None
        super().__init__(lock)

    def options(self) -> str:
        return "MEM" if self.memory_samples > 1_000_000 else "0"

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.function = "SIN"
        self.frequency_Hz = 1e3
        self.amplitude_Vpp = 0.1
        self.offset_V = 0.0
        self.load_ohm = 50.0
        self.output_on = False
        self.arbs: dict[str, np.ndarray] = {}
        self.selected_arb: str | None = None
        self.sample_rate_Hz = 40e3
        self.burst_on = False
        self.burst_cycles = 1
        self.burst_mode = "TRIG"
        self.trigger_source = "IMM"
        self.little_endian = False  # FORM:BORD NORM is big-endian
        self.trigger_count = 0

    def _register(self) -> None:
        src = "[SOURce[1]]:"
        self.command(src + "FUNCtion", self._set_function)
        self.query(src + "FUNCtion", lambda a: self._no_args(a) or self.function)
        self.command(src + "FUNCtion:ARBitrary", self._select_arb)
        self.query(src + "FUNCtion:ARBitrary", lambda a: self._no_args(a) or f'"{self.selected_arb or ""}"')
        self.command(src + "FUNCtion:ARBitrary:SRATe", self._set_srate)
        self.query(
            src + "FUNCtion:ARBitrary:SRATe", lambda a: self._no_args(a) or format_float(self.sample_rate_Hz)
        )
        self.command(src + "FREQuency", self._set_frequency)
        self.query(src + "FREQuency", lambda a: self._no_args(a) or format_float(self.frequency_Hz))
        self.command(src + "VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._set_amplitude)
        self.query(
            src + "VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: self._no_args(a) or format_float(self.amplitude_Vpp),
        )
        self.command(src + "VOLTage[:LEVel][:IMMediate]:OFFSet", self._set_offset)
        self.query(
            src + "VOLTage[:LEVel][:IMMediate]:OFFSet",
            lambda a: self._no_args(a) or format_float(self.offset_V),
        )
        self.command(src + "DATA:ARBitrary:DAC", self._load_dac)
        self.command(src + "DATA:ARBitrary", self._load_float)
        self.command(src + "DATA:VOLatile:CLEar", lambda a: self._no_args(a) or self._clear_volatile())
        self.query(
            src + "DATA:VOLatile:CATalog", lambda a: self._no_args(a) or ",".join(f'"{n}"' for n in self.arbs)
        )
        self.query(src + "DATA:VOLatile:FREE", lambda a: self._no_args(a) or str(self._free_points()))
        self.query(src + "DATA:ATTRibute:POINts", lambda a: str(self._arb(a).size))
        self.query(
            src + "DATA:ATTRibute:AVERage",
            lambda a: format_float(float(np.mean(self._arb(a))) / DAC_FULL_SCALE),
        )
        self.query(
            src + "DATA:ATTRibute:PTPeak",
            lambda a: format_float(float(np.ptp(self._arb(a).astype(np.int32))) / DAC_FULL_SCALE),
        )
        self.command(src + "BURSt:STATe", lambda a: setattr(self, "burst_on", arg_bool(self._one(a))))
        self.query(src + "BURSt:STATe", lambda a: self._no_args(a) or str(int(self.burst_on)))
        self.command(src + "BURSt:NCYCles", self._set_ncycles)
        self.query(
            src + "BURSt:NCYCles", lambda a: self._no_args(a) or format_float(float(self.burst_cycles))
        )
        self.command(
            src + "BURSt:MODE",
            lambda a: setattr(self, "burst_mode", arg_choice(self._one(a), ("TRIGgered",))),
        )
        self.query(src + "BURSt:MODE", lambda a: self._no_args(a) or self.burst_mode)
        self.command("OUTPut[1][:STATe]", lambda a: setattr(self, "output_on", arg_bool(self._one(a))))
        self.query("OUTPut[1][:STATe]", lambda a: self._no_args(a) or str(int(self.output_on)))
        self.command("OUTPut[1]:LOAD", self._set_load)
        self.query("OUTPut[1]:LOAD", lambda a: self._no_args(a) or format_float(self.load_ohm))
        self.command(
            "TRIGger[1]:SOURce",
            lambda a: setattr(
                self, "trigger_source", arg_choice(self._one(a), ("IMMediate", "EXTernal", "TIMer", "BUS"))
            ),
        )
        self.query("TRIGger[1]:SOURce", lambda a: self._no_args(a) or self.trigger_source)
        self.command("TRIGger[1][:IMMediate]", lambda a: self._no_args(a) or self._fire())
        self.command("FORMat:BORDer", self._set_border)
        self.query("FORMat:BORDer", lambda a: self._no_args(a) or ("SWAP" if self.little_endian else "NORM"))

    # --- handlers --------------------------------------------------------------------------
    def _set_function(self, args: Sequence[Arg]) -> None:
        func = arg_choice(self._one(args), _FUNCTIONS)
        if func == "ARB" and self.selected_arb is None:
            raise ScpiError(
                -221, "no arbitrary waveform selected; load one with DATA:ARB:DAC and select it with FUNC:ARB"
            )
        self.function = func

    def _select_arb(self, args: Sequence[Arg]) -> None:
        name = _unquote(self._one(args).text)
        if name.upper() not in {n.upper() for n in self.arbs}:
            raise ScpiError(-224, f"arb waveform {name!r} is not in volatile memory")
        self.selected_arb = next(n for n in self.arbs if n.upper() == name.upper())

    def _set_srate(self, args: Sequence[Arg]) -> None:
        rate = arg_float(
            self._one(args),
            {"MINimum": self.MIN_SAMPLE_RATE_Hz, "MAXimum": self.MAX_SAMPLE_RATE_Hz, "DEFault": 40e3},
        )
        if not self.MIN_SAMPLE_RATE_Hz <= rate <= self.MAX_SAMPLE_RATE_Hz:
            raise ScpiError(-222, f"sample rate {rate:g} Sa/s outside 1 uSa/s .. 160 MSa/s")
        self.sample_rate_Hz = rate

    def _set_frequency(self, args: Sequence[Arg]) -> None:
        freq = arg_float(self._one(args), {"MINimum": 1e-6, "MAXimum": 30e6, "DEFault": 1e3})
        if not 1e-6 <= freq <= 30e6:
            raise ScpiError(-222, f"frequency {freq:g} Hz out of range")
        self.frequency_Hz = freq

    def _load_factor(self) -> float:
        """Setting limits scale with the load setting (high-Z doubles them)."""
        return (
            2.0 if math.isinf(self.load_ohm) else (self.load_ohm + SOURCE_IMPEDANCE_OHM) / (2 * self.load_ohm)
        )

    def _set_amplitude(self, args: Sequence[Arg]) -> None:
        k = self._load_factor()
        vpp = arg_float(
            self._one(args), {"MINimum": self.MIN_VPP_50_OHM * k, "MAXimum": self.MAX_VPP_50_OHM * k}
        )
        if not self.MIN_VPP_50_OHM * k * (1 - 1e-9) <= vpp <= self.MAX_VPP_50_OHM * k * (1 + 1e-9):
            raise ScpiError(-222, f"amplitude {vpp:g} Vpp out of range for the load setting")
        if abs(self.offset_V) + vpp / 2 > self.MAX_PEAK_50_OHM * k * (1 + 1e-9):
            raise ScpiError(
                -221, f"amplitude {vpp:g} Vpp with offset {self.offset_V:g} V exceeds the output range"
            )
        self.amplitude_Vpp = vpp

    def _set_offset(self, args: Sequence[Arg]) -> None:
        k = self._load_factor()
        limit = self.MAX_PEAK_50_OHM * k
        offset = arg_float(
            self._one(args),
            {"MINimum": -(limit - self.amplitude_Vpp / 2), "MAXimum": limit - self.amplitude_Vpp / 2},
        )
        if abs(offset) + self.amplitude_Vpp / 2 > limit * (1 + 1e-9):
            raise ScpiError(
                -221,
                f"offset {offset:g} V with amplitude {self.amplitude_Vpp:g} Vpp exceeds the output range",
            )
        self.offset_V = offset

    def _set_load(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        load = arg_float(arg, {"INFinity": math.inf, "MINimum": 1.0, "MAXimum": 10e3, "DEFault": 50.0})
        if not (math.isinf(load) or 1.0 <= load <= 10e3):
            raise ScpiError(-222, f"load {load:g} ohm outside 1 ohm .. 10 kohm (or INF)")
        # like the instrument: the physical output is kept, the displayed values follow the load
        old_k, self.load_ohm = self._load_factor(), load
        scale = self._load_factor() / old_k
        self.amplitude_Vpp *= scale
        self.offset_V *= scale

    def _set_ncycles(self, args: Sequence[Arg]) -> None:
        cycles = arg_float(self._one(args), {"MINimum": 1, "MAXimum": 1e8, "INFinity": math.inf})
        if not (math.isinf(cycles) or (1 <= cycles <= 1e8 and cycles == int(cycles))):
            raise ScpiError(-222, f"burst count {cycles:g} must be an integer 1 .. 1e8 or INF")
        self.burst_cycles = cycles if math.isinf(cycles) else int(cycles)

    def _set_border(self, args: Sequence[Arg]) -> None:
        self.little_endian = arg_choice(self._one(args), ("NORMal", "SWAPped")) == "SWAP"

    def _check_new_arb(self, name: str, samples: int) -> None:
        if not _ARB_NAME.match(name):
            raise ScpiError(
                -224, f"arb name {name!r} must be 1-12 letters, digits or '_' starting with a letter"
            )
        if any(n.upper() == name.upper() for n in self.arbs):
            raise ScpiError(-221, f"arb {name!r} already exists; clear volatile memory (DATA:VOL:CLE) first")
        if samples < self.MIN_ARB_SAMPLES:
            raise ScpiError(-222, f"arb has {samples} points; at least {self.MIN_ARB_SAMPLES} are required")
        if samples > self._free_points():
            raise ScpiError(-223, f"arb of {samples} points does not fit ({self._free_points()} points free)")

    def _load_dac(self, args: Sequence[Arg]) -> None:
        if len(args) < 2:
            raise ScpiError(-109, "DATA:ARB:DAC needs a name and data")
        name = _unquote(args[0].text)
        if args[1].block:
            if len(args) > 2:
                raise ScpiError(-108, "only one binary block allowed")
            codes = decode_int16_block(args[1], self.little_endian)
        else:
            try:
                codes = np.array([int(a.raw) for a in args[1:]], dtype=np.int64)
            except ValueError:
                raise ScpiError(-104, "DAC values must be integers") from None
            except OverflowError:  # an integer beyond int64 is out of range like any other
                raise ScpiError(-222, "DAC codes must lie within -32767 .. +32767") from None
        if codes.size and (codes.min() < -DAC_FULL_SCALE or codes.max() > DAC_FULL_SCALE):
            raise ScpiError(-222, "DAC codes must lie within -32767 .. +32767")
        self._check_new_arb(name, codes.size)
        self.arbs[name] = codes.astype(np.int16)

    def _load_float(self, args: Sequence[Arg]) -> None:
        if len(args) < 2:
            raise ScpiError(-109, "DATA:ARB needs a name and data")
        name = _unquote(args[0].text)
        if args[1].block:
            if len(args[1].raw) % 4:
                raise ScpiError(-161, "float32 block length is not a multiple of 4")
            values = np.frombuffer(args[1].raw, dtype="<f4" if self.little_endian else ">f4").astype(
                np.float64
            )
        else:
            values = np.array([arg_float(a) for a in args[1:]])
        if values.size and (not np.all(np.isfinite(values)) or np.max(np.abs(values)) > 1.0):
            raise ScpiError(-222, "DATA:ARB values must lie within -1.0 .. +1.0")
        self._check_new_arb(name, values.size)
        self.arbs[name] = np.round(values * DAC_FULL_SCALE).astype(np.int16)

    def _clear_volatile(self) -> None:
        self.arbs.clear()
        self.selected_arb = None
        if self.function == "ARB":
            self.function = "SIN"

    def _free_points(self) -> int:
        return self.memory_samples - sum(a.size for a in self.arbs.values())

    def _arb(self, args: Sequence[Arg]) -> np.ndarray:
        """The arb a ``DATA:ATTR:...? [name]`` query is about (default: the selected one)."""
        name = _unquote(args[0].text) if args else self.selected_arb
        if name is None or name not in self.arbs:
            raise ScpiError(-224, f"arb {name!r} is not in volatile memory")
        return self.arbs[name]

    # --- triggering ------------------------------------------------------------------------
    def bus_trigger(self) -> None:
        if self.trigger_source != "BUS":
            raise ScpiError(-211, f"*TRG needs TRIG:SOUR BUS (source is {self.trigger_source})")
        self._fire()

    def _fire(self) -> None:
        if not self.burst_on:
            raise ScpiError(-211, "trigger ignored: burst mode is off (BURS:STAT ON)")
        self.trigger_count += 1
        if self.on_trigger is not None:
            self.on_trigger()

    # --- electrical output, for the lab wiring ---------------------------------------------
    @property
    def arb_sample_interval_s(self) -> float | None:
        """Sample interval of the playing arb, or None when not playing an arb."""
        return 1.0 / self.sample_rate_Hz if self.function == "ARB" and self.selected_arb else None

    def emf_V(self, start_tick: int, count: int, tick_s: float, oversample: int = 1) -> np.ndarray:
        """Open-circuit output voltage at times ``(start_tick + j) * tick_s`` after the last
        trigger (``j < count``). For an arb ``tick_s`` must be the arb sample interval divided by
        ``oversample``: the arb is zero-order held exactly on that grid."""
        if not self.output_on:
            return np.zeros(count)
        emf_per_display = (
            1.0 if math.isinf(self.load_ohm) else (self.load_ohm + SOURCE_IMPEDANCE_OHM) / self.load_ohm
        )
        half = self.amplitude_Vpp / 2
        ticks = np.arange(start_tick, start_tick + count, dtype=np.int64)
        if self.function == "ARB" and self.selected_arb:
            codes = self.arbs[self.selected_arb].astype(np.float64)
            n = codes.size
            index = ticks // oversample
            values = self.offset_V + half * codes / DAC_FULL_SCALE
            if self.burst_on:
                total = math.inf if math.isinf(self.burst_cycles) else n * self.burst_cycles
                idle = values[0]  # BURSt:IDLE FPT (first point), the arb default
                inside = (index >= 0) & (index < total)
                out = np.full(count, idle)
                out[inside] = values[index[inside] % n]
            else:
                out = values[index % n]
        else:
            t = ticks * tick_s
            phase = (t * self.frequency_Hz) % 1.0
            # only the selected shape is computed (DC, and ARB with no arb selected, are flat)
            if self.function == "SIN":
                shape = np.sin(2 * np.pi * phase)
            elif self.function == "SQU":
                shape = np.where(phase < 0.5, 1.0, -1.0)
            elif self.function == "RAMP":
                shape = 2 * phase - 1
            else:
                shape = np.zeros(count)
            amplitude = 0.0 if self.function == "DC" else half
            out = self.offset_V + amplitude * shape
            if self.burst_on and self.function != "DC":
                cycles = math.inf if math.isinf(self.burst_cycles) else self.burst_cycles / self.frequency_Hz
                out = np.where((t >= 0) & (t < cycles), out, self.offset_V)
        return emf_per_display * out


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
