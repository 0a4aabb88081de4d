"""Emulated Tektronix AWG5204 (channel 1 driven), speaking the AWG5200 SCPI.

State kept like the instrument: the waveform list (named float32 waveforms, -1 .. +1, made with
``WLISt:WAVeform:NEW`` and filled with ``WLISt:WAVeform:DATA`` from an IEEE float32
little-endian block or comma-separated numbers), the waveform assigned to each channel
(``SOURce[n]:CASSet:WAVeform``), the sample rate (``CLOCk:SRATe`` or ``SOURce:FREQuency``),
amplitude and offset into 50 ohm, the output path (DC High Bandwidth: 25 .. 750 mVpp; DC High
Voltage: 10 mVpp .. 5 Vpp, offset +-2 V), output state, run mode, trigger input, the value held
while waiting, and the run state (``AWGControl:RUN`` / ``STOP``, ``AWGControl:RSTate?``).
Limits follow the AWG5200 data sheet (300 Sa/s .. 2.5 GSa/s without option 50); violations
queue the SCPI error the instrument reports and leave the setting unchanged. ``*RST`` stops the
generator and unassigns the channel; the waveform list survives it, as on the instrument.

For the lab wiring the output is an open-circuit EMF behind 50 ohm (:meth:`emf_V`): amplitude
and offset are specified into 50 ohm, so the EMF is twice the programmed voltage. In triggered
run mode each A trigger (``TRIGger:IMMediate ATRigger`` or ``*TRG``) plays the waveform once;
in between the output holds the first sample (``OUTPut:WVALue:ANALog FIRSt``) or 0 V.
"""

from __future__ import annotations

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
    arg_int,
    arg_string,
    encode_block,
    format_float,
)

SOURCE_IMPEDANCE_OHM = 50.0
#: the DAC is 16 bits: a sample is played to within 1 / 32767 of full scale
_DAC_STEPS = 32767
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
#: output path -> (minimum Vpp, maximum Vpp, maximum |offset|) into 50 ohm
_PATHS = {
    "DCHB": (25e-3, 0.75, 0.0),
    "DCHV": (10e-3, 5.0, 2.0),
    "ACD": (25e-3, 0.75, 0.0),
    "ACAM": (25e-3, 0.75, 0.0),
}


class EmulatedAWG5200(ScpiInstrument):
    """One-channel AWG5204 emulator. ``on_trigger`` is called (under the lab lock) when channel 1,
    running in triggered mode, starts playing on an A trigger."""

    IDN = "TEKTRONIX,AWG5204,B010101,FV:6.3.0080.0"
    MAX_SAMPLE_RATE_Hz = 2.5e9
    MIN_SAMPLE_RATE_Hz = 300.0
    ERROR_QUEUE_DEPTH = 32
    #: ASCII waveforms (``WLIS:WAV:DATA "w",0,N,v1,v2,...``) need room: about 12 bytes a sample
    max_text_bytes = 32 << 20

    def __init__(self, memory_samples: int = 16_000_000, lock=None) -> None:
        self.memory_samples = int(memory_samples)
        self.max_block_bytes = 4 * self.memory_samples  # one float32 waveform filling the memory
        self.on_trigger: Callable[[], None] | None = None
        self.waveforms: dict[str, np.ndarray] = {}
        super().__init__(lock)

    def options(self) -> str:
        return "25,DC"

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.sample_rate_Hz = 1.2e9
        self.path = "DCHB"
        self.amplitude_Vpp = 0.5
        self.offset_V = 0.0
        self.output_on = False
        self.assigned: str | None = None
        self.run_mode = "CONT"
        self.trigger_input = "ATR"
        self.wait_value = "FIRS"
        self.running = False
        self.trigger_count = 0

    def _register(self) -> None:
        src = "[SOURce[1]]:"
        self.command("WLISt:WAVeform:NEW", self._new)
        self.command("WLISt:WAVeform:DATA", self._data)
        self.query("WLISt:WAVeform:DATA", self._read_data)
        self.command("WLISt:WAVeform:DELete", self._delete)
        self.query("WLISt:WAVeform:LENGth", lambda a: str(self._waveform(a).size))
        self.query("WLISt:WAVeform:LMAXimum", lambda a: self._no_args(a) or str(self.memory_samples))
        self.query("WLISt:WAVeform:LMINimum", lambda a: self._no_args(a) or "1")
        self.query("WLISt:WAVeform:GRANularity", lambda a: self._no_args(a) or "1")
        self.query("WLISt:SIZE", lambda a: self._no_args(a) or str(len(self.waveforms)))
        self.query("WLISt:LIST", lambda a: self._no_args(a) or '"' + ",".join(self.waveforms) + '"')
        self.command(src + "CASSet:WAVeform", self._assign)
        self.command(src + "CASSet:CLEar", lambda a: self._no_args(a) or self._unassign())
        self.query(src + "CASSet", lambda a: self._no_args(a) or f'"{self.assigned or ""}"')
        self.command("CLOCk:SRATe", self._set_rate)
        self.query("CLOCk:SRATe", lambda a: self._no_args(a) or format_float(self.sample_rate_Hz))
        self.command("[SOURce]:FREQuency[:CW]", self._set_rate)
        self.query("[SOURce]:FREQuency[:CW]", lambda a: self._no_args(a) or format_float(self.sample_rate_Hz))
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
        self.command(
            src + "RMODe", lambda a: self._set("run_mode", a, ("CONTinuous", "TRIGgered", "TCONtinuous"))
        )
        self.query(src + "RMODe", lambda a: self._no_args(a) or self.run_mode)
        self.command(
            src + "TINPut", lambda a: self._set("trigger_input", a, ("ATRigger", "BTRigger", "ITRigger"))
        )
        self.query(src + "TINPut", lambda a: self._no_args(a) or self.trigger_input)
        self.command("OUTPut[1][:STATe]", lambda a: setattr(self, "output_on", arg_bool(self._one(a))))
        self.query("OUTPut[1][:STATe]", lambda a: self._no_args(a) or str(int(self.output_on)))
        self.command("OUTPut[1]:PATH", self._set_path)
        self.query("OUTPut[1]:PATH", lambda a: self._no_args(a) or self.path)
        self.command(
            "OUTPut[1]:WVALue:ANALog[:STATe]", lambda a: self._set("wait_value", a, ("FIRSt", "ZERO"))
        )
        self.query("OUTPut[1]:WVALue:ANALog[:STATe]", lambda a: self._no_args(a) or self.wait_value)
        self.command("AWGControl:RUN[:IMMediate]", lambda a: self._no_args(a) or self._run())
        self.command(
            "AWGControl:STOP[:IMMediate]", lambda a: self._no_args(a) or setattr(self, "running", False)
        )
        self.query("AWGControl:RSTate", lambda a: self._no_args(a) or str(self._run_state()))
        self.command("TRIGger[:IMMediate]", self._trigger_command)

    # --- handlers --------------------------------------------------------------------------
    def _set(self, attribute: str, args: Sequence[Arg], choices: tuple[str, ...]) -> None:
        setattr(self, attribute, arg_choice(self._one(args), choices))

    def _name(self, arg: Arg) -> str:
        name = arg_string(arg)
        if not _NAME.match(name):
            raise ScpiError(-224, f"waveform name {name!r} must be 1-32 letters, digits or '_'")
        return name

    def _new(self, args: Sequence[Arg]) -> None:
        if len(args) not in (2, 3):
            raise ScpiError(-109, 'WLIS:WAV:NEW needs "name",size[,REAL]')
        name = self._name(args[0])
        size = arg_int(args[1])
        if len(args) == 3 and arg_choice(args[2], ("REAL",)) != "REAL":
            raise ScpiError(-224, "only REAL waveforms are supported")
        if name in self.waveforms:
            raise ScpiError(-221, f"waveform {name!r} already exists; delete it first (WLIS:WAV:DEL)")
        free = self.memory_samples - sum(w.size for w in self.waveforms.values())
        if not 1 <= size <= free:
            raise ScpiError(-222, f"waveform size {size} outside 1 .. {free} points free")
        self.waveforms[name] = np.zeros(size, dtype="<f4")

    def _data(self, args: Sequence[Arg]) -> None:
        if len(args) < 2:
            raise ScpiError(-109, 'WLIS:WAV:DATA needs "name"[,start[,size]],data')
        waveform = self._waveform(args[:1])
        block = next((i for i, a in enumerate(args) if a.block), None)
        if block is not None:
            if block != len(args) - 1:
                raise ScpiError(-108, "nothing may follow the binary block")
            if len(args[block].raw) % 4:
                raise ScpiError(-161, "float32 block length is not a multiple of 4")
            values = np.frombuffer(args[block].raw, dtype="<f4")
            head = list(args[1:block])
        else:  # start and size are mandatory before comma-separated values
            if len(args) < 4:
                raise ScpiError(-109, 'ASCII waveform data needs "name",start,size,v1,...')
            head = list(args[1:3])
            values = np.array([arg_float(a) for a in args[3:]], dtype="<f4")
        start = arg_int(head[0]) if head else 0
        size = arg_int(head[1]) if len(head) > 1 else values.size
        if size != values.size:
            raise ScpiError(-109, f"size {size} but {values.size} values sent")
        if not 0 <= start <= waveform.size - size:
            raise ScpiError(
                -222, f"samples {start} .. {start + size - 1} outside the {waveform.size}-point waveform"
            )
        if size and (not np.all(np.isfinite(values)) or float(np.max(np.abs(values))) > 1.0):
            raise ScpiError(-222, "waveform values must lie within -1.0 .. +1.0")
        waveform[start : start + size] = values

    def _read_data(self, args: Sequence[Arg]) -> bytes:
        waveform = self._waveform(args[:1])
        start = arg_int(args[1]) if len(args) > 1 else 0
        size = arg_int(args[2]) if len(args) > 2 else waveform.size - start
        if not (start >= 0 and size >= 0 and start + size <= waveform.size):
            raise ScpiError(
                -222, f"samples {start} .. {start + size - 1} outside the {waveform.size}-point waveform"
            )
        return encode_block(waveform[start : start + size].tobytes())

    def _delete(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        if arg.text.upper() == "ALL":
            self.waveforms.clear()
            self._unassign()
            return
        name = self._name(arg)
        if self.waveforms.pop(name, None) is None:
            raise ScpiError(-224, f"waveform {name!r} is not in the waveform list")
        if self.assigned == name:
            self._unassign()

    def _waveform(self, args: Sequence[Arg]) -> np.ndarray:
        if not args:
            raise ScpiError(-109, "a waveform name is required")
        name = self._name(args[0])
        if name not in self.waveforms:
            raise ScpiError(-224, f"waveform {name!r} is not in the waveform list")
        return self.waveforms[name]

    def _assign(self, args: Sequence[Arg]) -> None:
        name = self._name(self._one(args))
        if name not in self.waveforms:
            raise ScpiError(-224, f"waveform {name!r} is not in the waveform list")
        self.assigned = name

    def _unassign(self) -> None:
        self.assigned = None
        self.running = False

    def _set_rate(self, args: Sequence[Arg]) -> None:
        rate = arg_float(
            self._one(args), {"MINimum": self.MIN_SAMPLE_RATE_Hz, "MAXimum": self.MAX_SAMPLE_RATE_Hz}
        )
        if not self.MIN_SAMPLE_RATE_Hz <= rate <= self.MAX_SAMPLE_RATE_Hz:
            raise ScpiError(-222, f"sample rate {rate:g} Sa/s outside 300 Sa/s .. 2.5 GSa/s")
        self.sample_rate_Hz = rate

    def _set_path(self, args: Sequence[Arg]) -> None:
        path = arg_choice(self._one(args), ("DCHB", "DCHV", "ACDirect", "ACAMplified"))
        low, high, max_offset = _PATHS[path]
        self.path = path
        self.amplitude_Vpp = min(max(self.amplitude_Vpp, low), high)  # the instrument clamps
        self.offset_V = max(min(self.offset_V, max_offset), -max_offset)

    def _set_amplitude(self, args: Sequence[Arg]) -> None:
        low, high, _ = _PATHS[self.path]
        vpp = arg_float(self._one(args), {"MINimum": low, "MAXimum": high})
        if not low * (1 - 1e-9) <= vpp <= high * (1 + 1e-9):
            raise ScpiError(
                -222, f"amplitude {vpp:g} Vpp outside {low:g} .. {high:g} Vpp on path {self.path}"
            )
        self.amplitude_Vpp = vpp

    def _set_offset(self, args: Sequence[Arg]) -> None:
        limit = _PATHS[self.path][2]
        offset = arg_float(self._one(args), {"MINimum": -limit, "MAXimum": limit})
        if abs(offset) > limit * (1 + 1e-9):
            raise ScpiError(-222, f"offset {offset:g} V outside +-{limit:g} V on path {self.path}")
        self.offset_V = offset

    def _run(self) -> None:
        if self.assigned is None:
            raise ScpiError(-221, "no waveform assigned to channel 1 (SOUR1:CASS:WAV)")
        self.running = True

    def _run_state(self) -> int:
        if not self.running:
            return 0
        return 1 if self.run_mode == "TRIG" else 2

    # --- triggering ------------------------------------------------------------------------
    def bus_trigger(self) -> None:
        """``*TRG``: an A trigger event."""
        self._fire("ATR")

    def _trigger_command(self, args: Sequence[Arg]) -> None:
        which = arg_choice(args[0], ("ATRigger", "BTRigger")) if args else "ATR"
        if len(args) > 1:
            raise ScpiError(-108, "TRIG takes at most one parameter")
        self._fire(which)

    def _fire(self, which: str) -> None:
        if not self.running or self.run_mode != "TRIG":
            raise ScpiError(-211, "trigger ignored: the generator is not running in triggered mode")
        if which != self.trigger_input:
            return  # the other trigger input: channel 1 does not listen to it
        self.trigger_count += 1
        if self.on_trigger is not None:
            self.on_trigger()

    # --- electrical output, for the lab wiring ---------------------------------------------
    @property
    def arb_sample_interval_s(self) -> float | None:
        """Sample interval of the assigned waveform while running, else None."""
        return 1.0 / self.sample_rate_Hz if self.running and self.assigned else None

    def emf_V(self, start_tick: int, count: int, tick_s: float, oversample: int = 1) -> np.ndarray:
        """Open-circuit output voltage at times ``(start_tick + j) * tick_s`` after the last
        trigger (``j < count``); ``tick_s`` is the sample interval divided by ``oversample``."""
        if not self.output_on or not self.running or self.assigned is None:
            return np.zeros(count)
        samples = self.waveforms[self.assigned].astype(np.float64)
        values = self.offset_V + self.amplitude_Vpp / 2 * (np.round(samples * _DAC_STEPS) / _DAC_STEPS)
        index = np.arange(start_tick, start_tick + count, dtype=np.int64) // oversample
        if self.run_mode == "TRIG":
            idle = values[0] if self.wait_value == "FIRS" else 0.0
            out = np.full(count, idle)
            inside = (index >= 0) & (index < values.size)
            out[inside] = values[index[inside]]
        else:
            out = values[index % values.size]
        emf_per_volt = (SOURCE_IMPEDANCE_OHM + SOURCE_IMPEDANCE_OHM) / SOURCE_IMPEDANCE_OHM
        return emf_per_volt * out


__all__ = ["EmulatedAWG5200"]
