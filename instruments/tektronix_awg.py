"""Tektronix AWG5200-series arbitrary waveform generator (the ``awg`` role), binary float upload.

The AWG5200 keeps named waveforms in a waveform list: ``WLISt:WAVeform:NEW "name",N`` makes
one, ``WLISt:WAVeform:DATA "name",0,N,#...`` fills it with IEEE float32 samples (-1 .. +1 of
the amplitude, little-endian, one definite-length block: 4 bytes a sample, no per-sample
Python), ``SOURce1:CASSet:WAVeform "name"`` assigns it to channel 1. Amplitude and offset scale
it; the run mode ``TRIGgered`` plays it once per A trigger (``TRIGger:IMMediate ATRigger``) once
``AWGControl:RUN`` has started the generator, holding the first sample in between
(``OUTPut1:WVALue:ANALog FIRSt``), as the 33500B's burst does. The output is the DC High
Voltage path (``OUTPut1:PATH DCHV``: 10 mVpp .. 5 Vpp, offset +-2 V into 50 ohm, from the
AWG5200 data sheet), so any record within +-2 V is reachable.

``upload_arb(..., verify=True)`` reads the waveform back (``WLISt:WAVeform:DATA?``) and
compares it byte for byte, so a damaged transfer is never played. :meth:`upload_arb_ascii`
sends the same samples as comma-separated text, for the transfer benchmark only.
Only channel 1 is driven.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from pymeasure.instruments import Instrument, SCPIMixin

from spinlab.errors import ConfigError, InstrumentError, WaveformError
from spinlab.instruments.capabilities import AwgModel
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import AwgPlaying
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ErrorQueueMixin,
    choice_control,
    ensure_termination,
    flag_control,
    int_reply,
    parse_int,
    range_control,
    read_block,
)

#: AWG5200 data sheet: 2.5 GSa/s (option 25) or 5 GSa/s (option 50), 2 GSa of waveform memory a
#: channel; the DC High Voltage path reaches 5 Vpp with +-2 V offset, so +-2 V is always reachable.
AWG5200 = AwgModel("AWG5200", 5e9, 2_000_000_000, 2_000_000_000, max_peak_V=2.0)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def _waveform_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"waveform name {name!r} must be 1-32 letters, digits or '_' and start with a letter"
        )
    return name


class TektronixAWG5200(ErrorQueueMixin, SCPIMixin, Instrument):
    """Tektronix AWG5202/5204/5208, channel 1. Units: V (Vpp for amplitude) into 50 ohm, Sa/s.

    The maximum sample rate comes from ``*OPT?`` (option 50: 5 GSa/s, else 2.5 GSa/s) and the
    longest waveform from ``WLISt:WAVeform:LMAXimum?``, on first use unless given.
    """

    MIN_SAMPLE_RATE_Hz = 300.0
    MIN_AMPLITUDE_Vpp = 10e-3
    MAX_AMPLITUDE_Vpp = 5.0
    MAX_OFFSET_V = 2.0
    MAX_PEAK_V = AWG5200.max_peak_V
    #: the AWG5200 has no load setting: amplitude and offset are specified into 50 ohm
    LOAD_OHM = 50.0

    def __init__(
        self,
        adapter,
        name: str = "Tektronix AWG5200 waveform generator",
        memory_samples: int | None = None,
        max_sample_rate_Hz: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)
        self._memory_samples = memory_samples
        self._max_sample_rate_Hz = max_sample_rate_Hz

    # --- declarative settings ---------------------------------------------------------------
    output_enabled = flag_control(
        "OUTP1:STAT?", "OUTP1:STAT %d", """Control whether channel 1's output is on (bool).""", "output state"
    )
    output_path = choice_control(
        "OUTP1:PATH?",
        "OUTP1:PATH %s",
        """Control channel 1's output path (str: DCHB high bandwidth, DCHV high voltage, ACD, ACAM).""",
        ["DCHB", "DCHV", "ACD", "ACAM"],
        "output path",
    )
    wait_value = choice_control(
        "OUTP1:WVAL:ANAL?",
        "OUTP1:WVAL:ANAL %s",
        """Control what channel 1 holds while waiting for a trigger (str: FIRS first sample, ZERO).""",
        ["FIRS", "ZERO"],
        "wait value",
    )
    amplitude_Vpp = range_control(
        "SOUR1:VOLT?",
        "SOUR1:VOLT %.10g",
        """Control channel 1's amplitude in Vpp into 50 ohm (float, DC High Voltage path).""",
        [10e-3, 5.0],
        "amplitude",
    )
    offset_V = range_control(
        "SOUR1:VOLT:OFFS?",
        "SOUR1:VOLT:OFFS %.10g",
        """Control channel 1's offset in V into 50 ohm (float, DC High Voltage path).""",
        [-2.0, 2.0],
        "offset",
    )
    sample_rate_Hz = range_control(
        "CLOC:SRAT?",
        "CLOC:SRAT %.12g",
        """Control the sample rate in Sa/s (float, 300 Sa/s .. 5 GSa/s).""",
        [300.0, 5e9],
        "sample rate",
    )
    run_mode = choice_control(
        "SOUR1:RMOD?",
        "SOUR1:RMOD %s",
        """Control channel 1's run mode (str: CONT, TRIG one play per trigger, TCON).""",
        ["CONT", "TRIG", "TCON"],
        "run mode",
    )
    trigger_input = choice_control(
        "SOUR1:TINP?",
        "SOUR1:TINP %s",
        """Control which trigger starts channel 1 (str: ATR, BTR, ITR).""",
        ["ATR", "BTR", "ITR"],
        "trigger input",
    )
    run_state = Instrument.measurement(
        "AWGC:RST?",
        """Get the generator's run state (int: 0 stopped, 1 waiting for a trigger, 2 running).""",
        get_process=int_reply("run state"),
        **RAW_REPLY,
    )

    @property
    def output_load_ohm(self) -> float:
        """The load amplitude and offset refer to: always 50 ohm on the AWG5200."""
        return self.LOAD_OHM

    @output_load_ohm.setter
    def output_load_ohm(self, value: float) -> None:
        if float(value) != self.LOAD_OHM:
            raise ConfigError(
                f"the AWG5200 has no load setting (amplitude and offset are into 50 ohm); "
                f"set [awg] load_ohm = 50, got {value!r}"
            )

    # --- model capabilities ------------------------------------------------------------------
    @property
    def capabilities(self) -> AwgModel:
        return AWG5200

    @property
    def memory_samples(self) -> int:
        """Longest waveform (points) the generator holds, as it reports it."""
        if self._memory_samples is None:
            self._memory_samples = parse_int(self.ask("WLIS:WAV:LMAX?"), "longest waveform")
        return int(self._memory_samples)

    @property
    def max_sample_rate_Hz(self) -> float:
        """5 GSa/s with option 50, else 2.5 GSa/s (from ``*OPT?``)."""
        if self._max_sample_rate_Hz is None:
            options = self.ask("*OPT?").strip().strip('"').upper().split(",")
            self._max_sample_rate_Hz = 5e9 if "50" in [o.strip() for o in options] else 2.5e9
        return float(self._max_sample_rate_Hz)

    # --- waveforms ---------------------------------------------------------------------------
    @classmethod
    def float_scaling(cls, samples_V: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Samples normalised to -1 .. +1 (float32), amplitude (Vpp) and offset (V) that
        reproduce ``samples_V``: offset the mid-point, amplitude the peak-to-peak (raised to the
        minimum amplitude for a near-flat record, the samples shrinking instead)."""
        high, low = float(np.max(samples_V)), float(np.min(samples_V))
        offset = 0.5 * (high + low)
        amplitude = max(high - low, cls.MIN_AMPLITUDE_Vpp)
        values = (samples_V - offset) * (2.0 / amplitude)
        np.clip(values, -1.0, 1.0, out=values)
        return values.astype("<f4"), amplitude, offset

    def _checked(self, name: str, samples_V: np.ndarray, sample_rate_Hz: float) -> tuple[np.ndarray, float]:
        """The samples and rate, checked against the generator before anything is sent."""
        _waveform_name(name)
        samples = np.asarray(samples_V, dtype=np.float64)
        if samples.ndim != 1:
            raise WaveformError(f"a waveform is one signal: expected shape (n,), got {samples.shape}")
        if samples.size < 1:
            raise WaveformError("a waveform needs at least 1 sample")
        if not np.all(np.isfinite(samples)):
            bad = int(np.count_nonzero(~np.isfinite(samples)))
            raise WaveformError(f"waveform {name!r} has {bad} NaN/inf sample(s); nothing was sent")
        if samples.size > self.memory_samples:
            raise WaveformError(
                f"waveform has {samples.size} samples but the AWG5200 holds {self.memory_samples}; "
                "split the drive into segments (Waveform.split)"
            )
        rate = float(sample_rate_Hz)
        if not (math.isfinite(rate) and self.MIN_SAMPLE_RATE_Hz <= rate <= self.max_sample_rate_Hz):
            raise ConfigError(
                f"sample rate {sample_rate_Hz!r} Sa/s outside {self.MIN_SAMPLE_RATE_Hz:g} .. "
                f"{self.max_sample_rate_Hz:g} Sa/s"
            )
        high, low = float(np.max(samples)), float(np.min(samples))
        if max(abs(high), abs(low)) > self.MAX_PEAK_V:
            raise WaveformError(
                f"waveform spans {low:.4g} .. {high:.4g} V, beyond the +-{self.MAX_PEAK_V} V the AWG5200 "
                "reaches (5 Vpp, +-2 V offset); nothing was sent"
            )
        return samples, rate

    def upload_arb(
        self, name: str, samples_V: np.ndarray, sample_rate_Hz: float, verify: bool = False
    ) -> dict[str, float]:
        """Load ``samples_V`` (volts into 50 ohm) as waveform ``name``, assign it to channel 1 at
        ``sample_rate_Hz``. Validated before anything is sent; the error queue is checked
        afterwards, and with ``verify`` the waveform is read back (:meth:`verify_arb`)."""
        samples, rate = self._checked(name, samples_V, sample_rate_Hz)
        values, amplitude, offset = self.float_scaling(samples)
        self._new_waveform(name, values.size)
        # one IEEE 488.2 block of little-endian float32, built by pyvisa from the array
        self.write_binary_values(
            f'WLIS:WAV:DATA "{name}",0,{values.size},',
            values,
            datatype="f",
            is_big_endian=False,
            termination="\n",
        )
        return self._play(name, values, amplitude, offset, rate, verify)

    def upload_arb_ascii(
        self, name: str, samples_V: np.ndarray, sample_rate_Hz: float, verify: bool = False
    ) -> dict[str, float]:
        """:meth:`upload_arb` with the samples as comma-separated text (about 4x the bytes and a
        formatted number each): the slow path the transfer benchmark compares against."""
        samples, rate = self._checked(name, samples_V, sample_rate_Hz)
        values, amplitude, offset = self.float_scaling(samples)
        self._new_waveform(name, values.size)
        text = ",".join(np.char.mod("%.9g", values.astype(np.float64)))
        self.write(f'WLIS:WAV:DATA "{name}",0,{values.size},{text}')
        return self._play(name, values, amplitude, offset, rate, verify)

    def _new_waveform(self, name: str, size: int) -> None:
        self.write("AWGC:STOP")
        self.write("WLIS:WAV:DEL ALL")
        self.write(f'WLIS:WAV:NEW "{name}",{size}')

    def _play(
        self, name: str, values: np.ndarray, amplitude: float, offset: float, rate: float, verify: bool
    ) -> dict[str, float]:
        self.write(f'SOUR1:CASS:WAV "{name}"')
        self.output_path = "DCHV"
        self.sample_rate_Hz = rate
        # offset to 0 first, so no intermediate amplitude/offset pair leaves the output window
        self.offset_V = 0.0
        self.amplitude_Vpp = amplitude
        self.offset_V = offset
        self.raise_errors(f"uploading waveform {name!r} ({values.size} samples)")
        if verify:
            self.verify_arb(name, values)
        return {
            "amplitude_Vpp": amplitude,
            "offset_V": offset,
            "samples": int(values.size),
            "sample_rate_Hz": rate,
        }

    def verify_arb(self, name: str, values: np.ndarray) -> None:
        """Waveform ``name`` holds exactly ``values`` (float32): read back as one binary block and
        compared byte for byte; a transfer that lost, added or changed a sample raises
        InstrumentError."""
        _waveform_name(name)
        want = np.asarray(values, dtype="<f4").tobytes()
        self.write(f'WLIS:WAV:DATA? "{name}"')
        got = read_block(self)
        if got != want:
            if len(got) != len(want):
                detail = f"{len(got) / 4:g} samples instead of {len(want) // 4}"
            else:
                differ = np.frombuffer(got, "<f4").view("<u4") != np.frombuffer(want, "<f4").view("<u4")
                detail = f"{int(np.count_nonzero(differ))} sample(s) changed"
            raise InstrumentError(
                f"the AWG holds waveform {name!r} with {detail}: the upload was damaged in transfer"
            )

    def playing_state(self) -> AwgPlaying:
        """What channel 1 plays, in one query: ``ARB`` and the assigned waveform while one is
        assigned (a reset unassigns it), ``NONE`` otherwise; the load is always 50 ohm."""
        reply = self.ask("SOUR1:CASS?").strip()
        name = reply.strip('"').strip()
        if '"' in name or "," in name:
            raise InstrumentError(f"malformed waveform assignment from the AWG: {reply!r}")
        return AwgPlaying("ARB" if name else "NONE", name, self.LOAD_OHM)

    # --- triggering --------------------------------------------------------------------------
    def arm_burst(self, cycles: int = 1, source: str = "BUS") -> None:
        """Play the waveform once per A trigger (``source`` BUS: :meth:`trigger`; EXT: the rear
        A trigger input), holding its first sample in between, and start the generator. The
        AWG5200's triggered mode plays one cycle per trigger, so ``cycles`` must be 1."""
        if cycles != 1:
            raise ValueError(f"the AWG5200's triggered run mode plays 1 cycle per trigger, got {cycles!r}")
        if source not in ("BUS", "EXT"):
            raise ValueError(f"trigger source must be BUS or EXT, got {source!r}")
        self.run_mode = "TRIG"
        self.trigger_input = "ATR"
        self.wait_value = "FIRS"
        self.write("AWGC:RUN:IMM")
        self.check_in_step("starting the generator")  # *OPC?: running before the trigger
        self.raise_errors("arming the triggered run")

    def trigger(self) -> None:
        """Software A trigger, ``TRIGger:IMMediate ATRigger``."""
        self.write("TRIG:IMM ATR")

    def shutdown(self) -> None:
        """Output off, confirmed by reading it back, then mark the instrument shut down."""
        try:
            self.output_enabled = False
            if self.output_enabled:
                raise InstrumentError("AWG output still reports ON after OUTP1:STAT 0; switch it off by hand")
        finally:
            super().shutdown()


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
TEKTRONIX_AWG5200 = DriverSpec(
    "tektronix-awg5200",
    "awg",
    TektronixAWG5200,
    r"Tektronix",
    r"AWG52\d\d",
    AWG5200,
    "Tektronix AWG5200-series waveform generator, binary float32 waveform upload",
)
