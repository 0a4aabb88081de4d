"""Emulated Keysight InfiniiVision oscilloscope (4 analog channels), speaking real SCPI.

Acquisition model (documented choices where models differ):

* **ADC**: 8 bits over the 8 vertical divisions (``full scale = 8 * :CHANnel:SCALe``), centred
  on ``:CHANnel:OFFSet``; inputs beyond the screen clip to the end codes, as an InfiniiVision
  3000T/4000X does. In ``:WAVeform:FORMat WORD`` the 8-bit code sits in the upper byte (code *
  256), so ``yincrement = full_scale / 65536`` and the low byte is zero; ``BYTE`` sends the bare
  code, ``ASCii`` sends volts. ``:WAVeform:UNSigned`` and ``:WAVeform:BYTeorder`` behave as on
  the instrument.
* **Sample rate / depth**: ``:ACQuire:SRATe {AUTO|MAX|<rate>}`` and ``:ACQuire:POINts
  {AUTO|<n>}`` are settable as on Keysight scopes with manual sample rate (Infiniium-style;
  on 3000/4000X they are query-only and derived from the timebase). A requested rate is
  rounded up to the next available rate: 5 GSa/s divided by a 1-2-2.5-4-5 decade sequence.
  With both on AUTO the record spans ``:TIMebase:RANGe`` at the highest rate that fits memory.
* **Time axis**: the record starts at ``position - f * range`` with ``f`` = 0.1 / 0.5 / 0.9 for
  ``:TIMebase:REFerence LEFT / CENTer / RIGHt`` (the reference is one division from the edge).
* **Triggering**: the lab wiring calls :meth:`trigger` when the AWG fires (its trigger output
  drives ``EXTernal``); an armed scope with ``:TRIGger:EDGE:SOURce EXTernal``, a rising or
  either slope and a level inside the 0..3.3 V TTL swing captures one record. ``AUTO`` sweep
  acquires at once (untriggered); ``NORMal`` waits for a trigger. ``:TRIGger:FORCe`` forces one.
* **Segmented memory**: each trigger fills the next of ``:ACQuire:SEGMented:COUNt`` segments;
  ``:ACQuire:SEGMented:INDex`` selects the one transferred, ``:WAVeform:SEGMented:ALL ON``
  transfers all of them in one block (preamble ``points`` per segment, ``count`` = segments).
* **Status**: ``:OPERegister:CONDition?`` bit 3 (8) = running, bit 5 (32) = waiting for trigger;
  ``:AER?`` (arm event register) reads 1 once after the trigger system was armed;
  ``*OPC?`` after ``:DIGitize``/``:SINGle`` answers only when the acquisition has completed.
"""

from __future__ import annotations

import re
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
MEMORY_POINTS = 4_000_000
ADC_BITS = 8
_DECIMATIONS = sorted({m * 10**k for k in range(0, 11) for m in (1, 2, 2.5, 4, 5)})
#: Sample rates the emulated scope offers, fastest first.
SAMPLE_RATES_Hz = tuple(MAX_SAMPLE_RATE_Hz / d for d in _DECIMATIONS)
_REFERENCE_FRACTION = {"LEFT": 0.1, "CENT": 0.5, "RIGH": 0.9}
AWG_TRIGGER_OUT_HIGH_V = 3.3
_CHANNEL_RE = re.compile(r"^CHAN(?:NEL)?(\d{0,9})$", re.IGNORECASE)


@dataclass
class Channel:
    scale_V: float = 1.0
    offset_V: float = 0.0
    coupling: str = "DC"
    impedance: str = "ONEM"
    display: bool = False
    probe: float = 1.0


@dataclass
class Record:
    """One acquired segment: 8-bit ADC codes per displayed channel, and its time base."""

    codes: dict[int, np.ndarray]
    scales: dict[int, tuple[float, float]]  # channel -> (full_scale_V, offset_V) at capture
    x_increment_s: float
    x_origin_s: float


class EmulatedInfiniiVision(ScpiInstrument):
    """InfiniiVision emulator. ``acquire`` is supplied by the lab: given the record's sample
    times (s, relative to the trigger) and the channel numbers, it returns the analog input
    voltage of each channel at those times."""

    IDN = "KEYSIGHT TECHNOLOGIES,DSOX4024A,MY-EMULATED,07.50.2021102830"
    ERROR_QUEUE_DEPTH = 30

    def __init__(self, lock=None) -> None:
        self.acquire: Callable[[np.ndarray, Sequence[int], bool], dict[int, np.ndarray]] | None = None
        super().__init__(lock)

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.channels = {n: Channel(display=(n == 1)) for n in range(1, N_CHANNELS + 1)}
        self.time_range_s = 1e-3
        self.time_position_s = 0.0
        self.time_reference = "CENT"
        self.trigger_source = "CHAN1"
        self.trigger_level_V = 0.0
        self.trigger_slope = "POS"
        self.trigger_sweep = "AUTO"
        self.acq_type = "NORM"
        self.acq_mode = "RTIM"
        self.segment_count = 2
        self.segment_index = 1
        self.srate_setting: float | None = None  # None = AUTO
        self.points_setting: int | None = None  # None = AUTO
        self.wav_source = 1
        self.wav_format = "BYTE"
        self.wav_little_endian = False
        self.wav_unsigned = True
        self.wav_points_mode = "NORM"
        self.wav_points: int | None = 1000
        self.wav_segmented_all = False
        self.running = False
        self.waiting_trigger = False
        self.records: list[Record] = []
        self._opc_waiters: list = []  # sessions whose *OPC? waits for the acquisition
        self._trigger_event = False
        self._arm_event = False

    def _register(self) -> None:
        ch = "CHANnel<n>:"
        self.command(ch + "SCALe", lambda a, n: self._chan_set(n, "scale_V", self._positive(a)))
        self.query(ch + "SCALe", lambda a, n: format_float(self._chan(n).scale_V))
        self.command(ch + "RANGe", lambda a, n: self._chan_set(n, "scale_V", self._positive(a) / 8))
        self.query(ch + "RANGe", lambda a, n: format_float(self._chan(n).scale_V * 8))
        self.command(ch + "OFFSet", lambda a, n: self._chan_set(n, "offset_V", arg_float(self._one(a))))
        self.query(ch + "OFFSet", lambda a, n: format_float(self._chan(n).offset_V))
        self.command(
            ch + "COUPling",
            lambda a, n: self._chan_set(n, "coupling", arg_choice(self._one(a), ("AC", "DC"))),
        )
        self.query(ch + "COUPling", lambda a, n: self._chan(n).coupling)
        self.command(
            ch + "IMPedance",
            lambda a, n: self._chan_set(n, "impedance", arg_choice(self._one(a), ("ONEMeg", "FIFTy"))),
        )
        self.query(ch + "IMPedance", lambda a, n: self._chan(n).impedance)
        self.command(ch + "DISPlay", lambda a, n: self._chan_set(n, "display", arg_bool(self._one(a))))
        self.query(ch + "DISPlay", lambda a, n: str(int(self._chan(n).display)))
        self.command(ch + "PROBe", lambda a, n: self._chan_set(n, "probe", self._positive(a)))
        self.query(ch + "PROBe", lambda a, n: format_float(self._chan(n).probe))

        self.command("TIMebase[:MAIN]:RANGe", lambda a: setattr(self, "time_range_s", self._positive(a)))
        self.query("TIMebase[:MAIN]:RANGe", lambda a: format_float(self.time_range_s))
        self.command("TIMebase[:MAIN]:SCALe", lambda a: setattr(self, "time_range_s", 10 * self._positive(a)))
        self.query("TIMebase[:MAIN]:SCALe", lambda a: format_float(self.time_range_s / 10))
        self.command(
            "TIMebase[:MAIN]:POSition", lambda a: setattr(self, "time_position_s", arg_float(self._one(a)))
        )
        self.query("TIMebase[:MAIN]:POSition", lambda a: format_float(self.time_position_s))
        self.command(
            "TIMebase:REFerence",
            lambda a: setattr(self, "time_reference", arg_choice(self._one(a), ("LEFT", "CENTer", "RIGHt"))),
        )
        self.query("TIMebase:REFerence", lambda a: self.time_reference)

        self.command("TRIGger[:EDGE]:SOURce", self._set_trigger_source)
        self.query("TRIGger[:EDGE]:SOURce", lambda a: self.trigger_source)
        self.command("TRIGger[:EDGE]:LEVel", self._set_trigger_level)
        self.query("TRIGger[:EDGE]:LEVel", lambda a: format_float(self.trigger_level_V))
        self.command(
            "TRIGger[:EDGE]:SLOPe",
            lambda a: setattr(
                self,
                "trigger_slope",
                arg_choice(self._one(a), ("POSitive", "NEGative", "EITHer", "ALTernate")),
            ),
        )
        self.query("TRIGger[:EDGE]:SLOPe", lambda a: self.trigger_slope)
        self.command(
            "TRIGger:SWEep",
            lambda a: setattr(self, "trigger_sweep", arg_choice(self._one(a), ("AUTO", "NORMal"))),
        )
        self.query("TRIGger:SWEep", lambda a: self.trigger_sweep)
        self.command("TRIGger:MODE", lambda a: self._one(a) and arg_choice(a[0], ("EDGE",)) and None)
        self.query("TRIGger:MODE", lambda a: "EDGE")
        self.command("TRIGger:FORCe", lambda a: self._no_args(a) or self._force())

        self.command(
            "ACQuire:TYPE",
            lambda a: setattr(
                self, "acq_type", arg_choice(self._one(a), ("NORMal", "AVERage", "HRESolution", "PEAK"))
            ),
        )
        self.query("ACQuire:TYPE", lambda a: self.acq_type)
        self.command("ACQuire:MODE", self._set_acq_mode)
        self.query("ACQuire:MODE", lambda a: self.acq_mode)
        self.command("ACQuire:SEGMented:COUNt", self._set_segment_count)
        self.query("ACQuire:SEGMented:COUNt", lambda a: str(self.segment_count))
        self.command("ACQuire:SEGMented:INDex", self._set_segment_index)
        self.query("ACQuire:SEGMented:INDex", lambda a: str(self.segment_index))
        self.command("ACQuire:SRATe[:ANALog]", self._set_srate)
        self.query("ACQuire:SRATe[:ANALog]", lambda a: format_float(self.sample_rate_Hz()))
        self.command("ACQuire:POINts[:ANALog]", self._set_points)
        self.query("ACQuire:POINts[:ANALog]", lambda a: str(self.record_points()))

        self.command("WAVeform:SOURce", self._set_wav_source)
        self.query("WAVeform:SOURce", lambda a: f"CHAN{self.wav_source}")
        self.command(
            "WAVeform:FORMat",
            lambda a: setattr(self, "wav_format", arg_choice(self._one(a), ("WORD", "BYTE", "ASCii"))),
        )
        self.query("WAVeform:FORMat", lambda a: self.wav_format)
        self.command(
            "WAVeform:BYTeorder",
            lambda a: setattr(
                self, "wav_little_endian", arg_choice(self._one(a), ("LSBFirst", "MSBFirst")) == "LSBF"
            ),
        )
        self.query("WAVeform:BYTeorder", lambda a: "LSBF" if self.wav_little_endian else "MSBF")
        self.command("WAVeform:UNSigned", lambda a: setattr(self, "wav_unsigned", arg_bool(self._one(a))))
        self.query("WAVeform:UNSigned", lambda a: str(int(self.wav_unsigned)))
        self.command(
            "WAVeform:POINts:MODE",
            lambda a: setattr(
                self, "wav_points_mode", arg_choice(self._one(a), ("NORMal", "MAXimum", "RAW"))
            ),
        )
        self.query("WAVeform:POINts:MODE", lambda a: self.wav_points_mode)
        self.command("WAVeform:POINts", self._set_wav_points)
        self.query("WAVeform:POINts", lambda a: str(self._transfer_points()))
        self.command(
            "WAVeform:SEGMented:ALL", lambda a: setattr(self, "wav_segmented_all", arg_bool(self._one(a)))
        )
        self.query("WAVeform:SEGMented:ALL", lambda a: str(int(self.wav_segmented_all)))
        self.query(
            "WAVeform:SEGMented:COUNt",
            lambda a: str(len(self.records) if self.acq_mode == "SEGM" else int(bool(self.records))),
        )
        self.query("WAVeform:PREamble", lambda a: self._preamble())
        self.query("WAVeform:DATA", lambda a: self._data())
        self.query("WAVeform:XINCrement", lambda a: self._preamble_fields()[4])
        self.query("WAVeform:XORigin", lambda a: self._preamble_fields()[5])
        self.query("WAVeform:YINCrement", lambda a: self._preamble_fields()[7])
        self.query("WAVeform:YORigin", lambda a: self._preamble_fields()[8])
        self.query("WAVeform:YREFerence", lambda a: self._preamble_fields()[9])

        self.command("RUN", lambda a: self._no_args(a) or self._arm(single=False))
        self.command("STOP", lambda a: self._no_args(a) or self._stop())
        self.command("SINGle", lambda a: self._no_args(a) or self._arm(single=True))
        self.command("DIGitize", self._digitize)
        self.query("OPERegister:CONDition", lambda a: str(self.operation_condition()))
        self.query("TER", lambda a: self._take_trigger_event())
        self.query("AER", lambda a: self._take_arm_event())

    # --- helpers ---------------------------------------------------------------------------
    def _chan(self, n: int) -> Channel:
        if n not in self.channels:
            raise ScpiError(-114, f"channel {n} does not exist (1..{N_CHANNELS})")
        return self.channels[n]

    def _chan_set(self, n: int, name: str, value) -> None:
        setattr(self._chan(n), name, value)

    def _positive(self, args: Sequence[Arg]) -> float:
        value = arg_float(self._one(args))
        if not value > 0:
            raise ScpiError(-222, f"value must be positive, got {value:g}")
        return value

    def _channel_number(self, arg: Arg) -> int:
        match = _CHANNEL_RE.match(arg.text)
        if not match:
            raise ScpiError(-224, f"{arg.text!r} is not an analog channel (CHANnel1..{N_CHANNELS})")
        n = int(match.group(1) or 1)
        if n not in self.channels:
            raise ScpiError(-224, f"channel {n} does not exist (1..{N_CHANNELS})")
        return n

    def _set_trigger_source(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        if _CHANNEL_RE.match(arg.text):
            self.trigger_source = f"CHAN{self._channel_number(arg)}"
        else:
            self.trigger_source = arg_choice(arg, ("EXTernal", "LINE", "WGEN"))

    def _set_trigger_level(self, args: Sequence[Arg]) -> None:
        """``:TRIGger:EDGE:LEVel <level>[,<source>]`` (the source is accepted and ignored)."""
        if not args:
            raise ScpiError(-109)
        if len(args) > 2:
            raise ScpiError(-108, "expected <level>[,<source>]")
        self.trigger_level_V = arg_float(args[0])

    def _set_acq_mode(self, args: Sequence[Arg]) -> None:
        mode = arg_choice(self._one(args), ("RTIMe", "SEGMented"))
        if mode != self.acq_mode:
            self.records = []
        self.acq_mode = mode

    def _set_segment_count(self, args: Sequence[Arg]) -> None:
        count = arg_int(self._one(args))
        if not 2 <= count <= 1000:
            raise ScpiError(-222, f"segment count {count} outside 2..1000")
        self.segment_count = count

    def _set_segment_index(self, args: Sequence[Arg]) -> None:
        index = arg_int(self._one(args))
        if not 1 <= index <= max(len(self.records), 1):
            raise ScpiError(-222, f"segment {index} not acquired (1..{len(self.records)})")
        self.segment_index = index

    def _set_srate(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        if arg.text.upper() == "AUTO":
            self.srate_setting = None
            return
        rate = arg_float(arg, {"MAXimum": MAX_SAMPLE_RATE_Hz})
        if not 0 < rate <= MAX_SAMPLE_RATE_Hz:
            raise ScpiError(-222, f"sample rate {rate:g} Sa/s outside 0 .. {MAX_SAMPLE_RATE_Hz:g}")
        # round to the next fastest available rate
        self.srate_setting = min(r for r in SAMPLE_RATES_Hz if r >= rate * (1 - 1e-12))

    def _set_points(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        if arg.text.upper() == "AUTO":
            self.points_setting = None
            return
        points = arg_int(arg)
        limit = self._memory_points()
        if not 100 <= points <= limit:
            raise ScpiError(-222, f"{points} points outside 100 .. {limit}")
        self.points_setting = points

    def _set_wav_source(self, args: Sequence[Arg]) -> None:
        self.wav_source = self._channel_number(self._one(args))

    def _set_wav_points(self, args: Sequence[Arg]) -> None:
        arg = self._one(args)
        if arg.text.upper() in ("MAX", "MAXIMUM"):
            self.wav_points = None
            return
        points = arg_int(arg)
        if points < 1:
            raise ScpiError(-222, "waveform points must be >= 1")
        self.wav_points = points

    # --- acquisition -----------------------------------------------------------------------
    def sample_rate_Hz(self) -> float:
        if self.srate_setting is not None:
            return self.srate_setting
        points = self.points_setting or self._memory_points()
        fitting = [r for r in SAMPLE_RATES_Hz if r * self.time_range_s <= points]
        return fitting[0] if fitting else SAMPLE_RATES_Hz[-1]

    def record_points(self) -> int:
        if self.points_setting is not None:
            return self.points_setting
        # a record never exceeds the acquisition memory, whatever rate and time range ask for
        return min(max(round(self.time_range_s * self.sample_rate_Hz()), 1), self._memory_points())

    def _memory_points(self) -> int:
        return MEMORY_POINTS // (self.segment_count if self.acq_mode == "SEGM" else 1)

    def record_start_s(self) -> float:
        start = self.time_position_s - _REFERENCE_FRACTION[self.time_reference] * self.time_range_s
        return round(start, 15) + 0.0  # femtosecond resolution: no -1e-19 from float round-off

    def operation_condition(self) -> int:
        return (8 if self.running else 0) | (32 if self.running and self.waiting_trigger else 0)

    def _arm(self, single: bool) -> None:
        if self.acq_mode == "SEGM" or single:
            self.records = []
        self.running = True
        self.waiting_trigger = True
        self._arm_event = True
        self._single = single
        if self.trigger_sweep == "AUTO":
            self._capture(triggered=False)

    def _stop(self) -> None:
        self.running = False
        self.waiting_trigger = False
        self._complete_opc()

    def _digitize(self, args: Sequence[Arg]) -> None:
        for arg in args:
            text = arg.text.upper()
            if not text.startswith("CHAN"):
                raise ScpiError(-224, f"cannot digitize {text!r}")
        self._arm(single=True)

    def _force(self) -> None:
        if not self.running:
            raise ScpiError(-211, "trigger forced while stopped; arm with :SINGle or :RUN")
        self._capture(triggered=False)

    def trigger_input_edge(self, source: str = "EXT", high_V: float = AWG_TRIGGER_OUT_HIGH_V) -> bool:
        """A rising edge (0 V -> ``high_V``) arrived at trigger input ``source``; capture if the
        trigger setup would fire on it. Returns whether an acquisition happened."""
        with self.lock:
            if not (self.running and self.waiting_trigger):
                return False
            if self.trigger_source != source or self.trigger_slope not in ("POS", "EITH"):
                return False
            if not 0.0 < self.trigger_level_V < high_V:
                return False
            self._capture(triggered=True)
            return True

    def _capture(self, triggered: bool) -> None:
        points = self.record_points()
        dt = 1.0 / self.sample_rate_Hz()
        x0 = self.record_start_s()
        times = x0 + dt * np.arange(points)
        shown = [n for n, c in self.channels.items() if c.display]
        analog = (
            self.acquire(times, shown, triggered)
            if self.acquire is not None
            else {n: np.zeros(points) for n in shown}
        )
        codes, scales = {}, {}
        half = 2 ** (ADC_BITS - 1)
        for n in shown:
            c = self.channels[n]
            full_scale = 8 * c.scale_V
            volts = analog[n] / c.probe
            if c.coupling == "AC":
                volts = volts - volts.mean()
            code = np.rint((volts - c.offset_V) / (full_scale / 2**ADC_BITS))
            codes[n] = np.clip(code, -half, half - 1).astype(np.int16)
            scales[n] = (full_scale, c.offset_V)
        hit = self.faults.fire("capture") if self.faults is not None else None
        if hit is not None:  # overrange: the input left the screen for a stretch of the record
            run = min(points, max(16, points // 50))
            first = int(hit[1].integers(0, points - run + 1))
            for n in shown:
                codes[n][first : first + run] = half - 1
        self.records.append(Record(codes, scales, dt, x0))
        self._trigger_event = self._trigger_event or triggered
        if self.acq_mode == "SEGM":
            self.segment_index = len(self.records)
            done = len(self.records) >= self.segment_count
        else:
            self.records = self.records[-1:]
            done = self._single
        if done:
            self.running = False
            self.waiting_trigger = False
            self._complete_opc()

    def operation_pending(self) -> bool:
        """``*OPC?`` answers only once a pending :SINGle/:DIGitize/segmented run completes."""
        return self.running and self._single_pending()

    def _single_pending(self) -> bool:
        return getattr(self, "_single", False) or self.acq_mode == "SEGM"

    def _take_arm_event(self) -> str:
        value, self._arm_event = self._arm_event, False
        return "+1" if value else "+0"

    def _take_trigger_event(self) -> str:
        value, self._trigger_event = self._trigger_event, False
        return "+1" if value else "+0"

    # --- waveform transfer -----------------------------------------------------------------
    def _current_records(self) -> list[Record]:
        if not self.records:
            return []
        if self.acq_mode == "SEGM" and self.wav_segmented_all:
            return self.records
        index = min(self.segment_index, len(self.records)) - 1 if self.acq_mode == "SEGM" else -1
        return [self.records[index]]

    def _source_codes(self, record: Record) -> np.ndarray:
        if self.wav_source not in record.codes:
            raise ScpiError(-222, f"channel {self.wav_source} was not displayed during the acquisition")
        codes = record.codes[self.wav_source]
        step = 1
        limit = self._transfer_limit(codes.size)
        if limit < codes.size:
            step = codes.size // limit
            codes = codes[::step][:limit]
        return codes

    def _transfer_limit(self, record_points: int) -> int:
        if self.wav_points is None or self.wav_points_mode == "MAX":
            return record_points
        if self.wav_points_mode == "NORM":
            return min(self.wav_points, record_points, 62_500)
        return min(self.wav_points, record_points)

    def _transfer_points(self) -> int:
        records = self._current_records()
        if not records:
            return self.wav_points or self.record_points()
        return self._transfer_limit(records[0].codes.get(self.wav_source, np.zeros(0)).size)

    def _preamble_fields(self) -> list[str]:
        records = self._current_records()
        fmt = {"BYTE": 0, "WORD": 1, "ASC": 4}[self.wav_format]
        acq_type = {"NORM": 0, "PEAK": 1, "AVER": 2, "HRES": 3}[self.acq_type]
        if not records:
            c = self.channels[self.wav_source]
            full_scale, offset = 8 * c.scale_V, c.offset_V
            points, xinc, x0, count = 0, 1.0 / self.sample_rate_Hz(), self.record_start_s(), 1
        else:
            record = records[0]
            if self.wav_source not in record.scales:
                raise ScpiError(-222, f"channel {self.wav_source} was not displayed during the acquisition")
            full_scale, offset = record.scales[self.wav_source]
            total = record.codes[self.wav_source].size
            points = self._transfer_limit(total)
            xinc = record.x_increment_s * (total // points if points < total else 1)
            x0 = record.x_origin_s
            count = len(records)
        if self.wav_format == "WORD":
            yinc, yref = full_scale / 2**16, (32768 if self.wav_unsigned else 0)
        elif self.wav_format == "BYTE":
            yinc, yref = full_scale / 2**ADC_BITS, (128 if self.wav_unsigned else 0)
        else:
            yinc, yref = full_scale / 2**ADC_BITS, 0
        return [
            f"{fmt:+d}",
            f"{acq_type:+d}",
            f"{points:+d}",
            f"{count:+d}",
            format_float(xinc),
            format_float(x0),
            "+0",
            format_float(yinc),
            format_float(offset),
            f"{yref:+d}",
        ]

    def _preamble(self) -> str:
        return ",".join(self._preamble_fields())

    def _data(self) -> bytes:
        records = self._current_records()
        if not records:
            self.push_error(
                ScpiError(-222, "no acquired data; arm with :SINGle or :DIGitize and trigger first")
            )
            return encode_block(b"")
        codes = np.concatenate([self._source_codes(r) for r in records])
        if self.wav_format == "WORD":
            words = codes.astype(np.int32) * 256
            if self.wav_unsigned:
                payload = (words + 32768).astype("<u2" if self.wav_little_endian else ">u2").tobytes()
            else:
                payload = words.astype("<i2" if self.wav_little_endian else ">i2").tobytes()
        elif self.wav_format == "BYTE":
            payload = (
                (codes.astype(np.int16) + 128).astype(np.uint8)
                if self.wav_unsigned
                else codes.astype(np.int8)
            ).tobytes()
        else:
            scales = [r.scales[self.wav_source] for r in records]
            volts = np.concatenate(
                [self._source_codes(r) * (fs / 2**ADC_BITS) + off for r, (fs, off) in zip(records, scales)]
            )
            payload = ",".join(f"{v:+.6E}" for v in volts).encode()
            length = str(len(payload)).encode().rjust(8, b"0")
            return b"#8" + length + payload
        return encode_block(payload)
