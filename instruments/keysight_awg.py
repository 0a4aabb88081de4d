"""Keysight 33500B / 33600A arbitrary waveform generator with binary arb upload.

pymeasure's ``Agilent33500`` uploads arbs as comma-separated ASCII (about 7 bytes and a Python
``str()`` per sample); this driver sends int16 DAC codes as one IEEE 488.2 definite-length block
in little-endian order (``FORM:BORD SWAP``), about 2 bytes per sample and no per-sample Python.
After every upload the error queue is drained and any error raises
:class:`~spinlab.errors.InstrumentError`, so a rejected waveform is never silently played;
``upload_arb(..., verify=True)`` also reads back what the AWG holds (point count, mean and
peak-to-peak of the arb) so a damaged transfer is caught before it is played.
Only channel 1 is driven (the experiment needs one drive line).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.validators import strict_discrete_set, strict_range

from spinlab.errors import ConfigError, InstrumentError, WaveformError
from spinlab.instruments.capabilities import AWG_MODELS, AwgModel, awg_model_of
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import AwgPlaying
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ErrorQueueMixin,
    choice_control,
    ensure_termination,
    flag_control,
    float_reply,
    int_reply,
    parse_choice,
    parse_float,
    parse_int,
)

DAC_FULL_SCALE = 32767
_ARB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")
_FUNCTIONS = ["SIN", "SQU", "RAMP", "PULS", "NOIS", "DC", "ARB", "PRBS", "TRI"]
#: Relative tolerance of the arb attributes read back: instruments may normalise by 32767 or
#: 32768 (3.05e-5 apart).
_ATTRIBUTE_RTOL = 4e-5


#: What channel 1 plays: function, selected arb and output load setting (ohm) (the AWG role's).
AwgState = AwgPlaying


def _last_digit(number: str) -> float:
    """Value of one unit in the last printed digit of ``number`` (``'+1.0000'`` -> 1e-4)."""
    mantissa, _, exponent = number.strip().upper().partition("E")
    decimals = len(mantissa.partition(".")[2])
    try:
        return 10.0 ** (int(exponent or 0) - decimals)
    except ValueError:
        return 0.0


def _arb_name(value: str, _values: Any = None) -> str:
    if not isinstance(value, str) or not _ARB_NAME.match(value):
        raise ValueError(f"arb name {value!r} must be 1-12 letters, digits or '_' and start with a letter")
    return value


def _load_setting(value: float, _values: Any = None) -> float:
    value = float(value)
    if not (math.isinf(value) and value > 0) and not 1.0 <= value <= 10e3:
        raise ValueError(f"output load must be 1 ohm .. 10 kohm or math.inf (high-Z), got {value!r}")
    return value


class Keysight33500B(ErrorQueueMixin, SCPIMixin, Instrument):
    """Keysight 33500B/33600A AWG, channel 1 (the ``awg`` role). Units: V (Vpp for amplitude), Hz, ohm.

    ``memory_samples`` (longest arb) and ``max_sample_rate_Hz`` are read from ``*IDN?`` /
    ``*OPT?`` on first use unless given.
    """

    MIN_ARB_SAMPLES = 8
    #: Smallest amplitude valid for every load setting (1 mVpp into 50 ohm, 2 mVpp high-Z).
    MIN_AMPLITUDE_Vpp = 2e-3
    #: |offset| + Vpp/2 must stay below this into 50 ohm (the conservative, always-valid limit).
    MAX_PEAK_V = 5.0  # both families: capabilities.AWG_MODELS[...].max_peak_V

    def __init__(
        self,
        adapter,
        name: str = "Keysight 33500B waveform generator",
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
        self._family: AwgModel | None = None

    # --- declarative settings ---------------------------------------------------------------
    output_enabled = flag_control(
        "OUTP1?", "OUTP1 %d", """Control whether channel 1's output relay is closed (bool).""", "output state"
    )
    output_load_ohm = Instrument.control(
        "OUTP1:LOAD?",
        "OUTP1:LOAD %s",
        """Control the load the amplitude refers to, in ohm (50, or math.inf for high-Z).""",
        validator=_load_setting,
        set_process=lambda v: "INF" if math.isinf(v) else f"{v:g}",
        get_process=float_reply("output load"),
        **RAW_REPLY,
    )
    function = Instrument.control(
        "SOUR1:FUNC?",
        "SOUR1:FUNC %s",
        """Control the output function (str: SIN, SQU, RAMP, PULS, NOIS, DC, ARB, PRBS, TRI).""",
        validator=strict_discrete_set,
        values=_FUNCTIONS,
        get_process=parse_choice(_FUNCTIONS, "function"),
        **RAW_REPLY,
    )
    amplitude_Vpp = Instrument.control(
        "SOUR1:VOLT?",
        "SOUR1:VOLT %.10g",
        """Control the amplitude in volts peak-to-peak into the load setting (float).""",
        validator=strict_range,
        values=[1e-3, 20.0],
        get_process=float_reply("amplitude"),
        **RAW_REPLY,
    )
    offset_V = Instrument.control(
        "SOUR1:VOLT:OFFS?",
        "SOUR1:VOLT:OFFS %.10g",
        """Control the DC offset in volts into the load setting (float).""",
        validator=strict_range,
        values=[-10.0, 10.0],
        get_process=float_reply("offset"),
        **RAW_REPLY,
    )
    sample_rate_Hz = Instrument.control(
        "SOUR1:FUNC:ARB:SRAT?",
        "SOUR1:FUNC:ARB:SRAT %.12g",
        """Control the arb sample rate in Sa/s (float, 1 uSa/s .. the model's maximum).""",
        validator=strict_range,
        values=[1e-6, 1e9],
        get_process=float_reply("arb sample rate"),
        **RAW_REPLY,
    )
    arb_name = Instrument.control(
        "SOUR1:FUNC:ARB?",
        "SOUR1:FUNC:ARB %s",
        """Control which arb in volatile memory is played (str).""",
        validator=_arb_name,
        get_process=lambda r: str(r).strip().strip('"'),
        **RAW_REPLY,
    )
    burst_enabled = flag_control(
        "SOUR1:BURS:STAT?", "SOUR1:BURS:STAT %d", """Control burst mode (bool).""", "burst state"
    )
    burst_cycles = Instrument.control(
        "SOUR1:BURS:NCYC?",
        "SOUR1:BURS:NCYC %d",
        """Control how many arb periods one trigger plays (int, 1 .. 1e8).""",
        validator=strict_range,
        values=[1, 100_000_000],
        set_process=int,
        get_process=int_reply("burst count"),
        **RAW_REPLY,
    )
    burst_mode = choice_control(
        "SOUR1:BURS:MODE?",
        "SOUR1:BURS:MODE %s",
        """Control the burst mode (str: TRIG or GAT).""",
        ["TRIG", "GAT"],
        "burst mode",
    )
    trigger_source = choice_control(
        "TRIG1:SOUR?",
        "TRIG1:SOUR %s",
        """Control what starts a burst (str: BUS for *TRG, EXT, IMM, TIM).""",
        ["BUS", "EXT", "IMM", "TIM"],
        "trigger source",
    )
    byte_order = choice_control(
        "FORM:BORD?",
        "FORM:BORD %s",
        """Control the byte order of binary blocks (str: NORM big endian, SWAP little endian).""",
        ["NORM", "SWAP"],
        "byte order",
    )

    # --- model capabilities ------------------------------------------------------------------
    @property
    def memory_samples(self) -> int:
        """Longest arb (points) the instrument holds, from its model and options."""
        if self._memory_samples is None:
            self._read_capabilities()
        return int(self._memory_samples)

    @property
    def max_sample_rate_Hz(self) -> float:
        if self._max_sample_rate_Hz is None:
            self._read_capabilities()
        return float(self._max_sample_rate_Hz)

    @property
    def family(self) -> AwgModel:
        """The 33500B/33600A family this generator belongs to (from ``*IDN?``)."""
        if self._family is None:
            self._read_capabilities()
        return self._family

    @property
    def capabilities(self) -> AwgModel:
        """The AWG role's name for :attr:`family`."""
        return self.family

    def _read_capabilities(self) -> None:
        idn = self.ask("*IDN?").strip()
        fields = [f.strip() for f in idn.split(",")]
        if len(fields) < 4:
            raise InstrumentError(f"malformed *IDN? reply: {idn!r}")
        options = self.ask("*OPT?").strip().upper()
        has_mem = "MEM" in options.replace('"', "").split(",")
        family = awg_model_of(fields[1])
        if family is None:
            raise InstrumentError(
                f"{idn!r} is not a 33500B/33600A-series generator; check the station's "
                "[resources] awg address"
            )
        self._family = family
        memory = family.memory_samples_mem if has_mem else family.memory_samples
        rate = family.max_sample_rate_Hz
        if self._memory_samples is None:
            self._memory_samples = memory
        if self._max_sample_rate_Hz is None:
            self._max_sample_rate_Hz = rate

    # --- arbitrary waveforms -----------------------------------------------------------------
    def clear_volatile(self) -> None:
        """Erase every arb in volatile memory (frees it for the next upload)."""
        self.write("SOUR1:DATA:VOL:CLE")

    @classmethod
    def dac_scaling(cls, samples_V: np.ndarray) -> tuple[np.ndarray, float, float]:
        """DAC codes, amplitude (Vpp) and offset (V) that reproduce ``samples_V``.

        The offset is the mid-point and the amplitude the peak-to-peak of the samples, so the
        codes span the full -32767..+32767 range (best resolution); below the minimum amplitude
        the amplitude is raised and the codes shrink instead, keeping the output exact.
        """
        high, low = float(np.max(samples_V)), float(np.min(samples_V))
        offset = 0.5 * (high + low)
        amplitude = max(high - low, cls.MIN_AMPLITUDE_Vpp)
        codes = np.rint((samples_V - offset) * (2 * DAC_FULL_SCALE / amplitude))
        np.clip(codes, -DAC_FULL_SCALE, DAC_FULL_SCALE, out=codes)
        return codes.astype(np.int16), amplitude, offset

    def upload_arb(
        self, name: str, samples_V: np.ndarray, sample_rate_Hz: float, verify: bool = False
    ) -> dict[str, float]:
        """Load ``samples_V`` (volts into the load setting) as arb ``name``, select and play it
        at ``sample_rate_Hz``. Everything is validated before anything is sent; the error queue
        is checked afterwards, and with ``verify`` the arb is read back (:meth:`verify_arb`).
        Returns the amplitude/offset used."""
        _arb_name(name)
        samples = np.asarray(samples_V, dtype=np.float64)
        if samples.ndim != 1:
            raise WaveformError(f"an arb is one signal: expected shape (n,), got {samples.shape}")
        if not np.all(np.isfinite(samples)):
            bad = int(np.count_nonzero(~np.isfinite(samples)))
            raise WaveformError(f"arb {name!r} has {bad} NaN/inf sample(s); nothing was sent")
        if samples.size < self.MIN_ARB_SAMPLES:
            raise WaveformError(
                f"arb has {samples.size} samples; the 33500B needs at least {self.MIN_ARB_SAMPLES}"
            )
        if samples.size > self.memory_samples:
            raise WaveformError(
                f"arb has {samples.size} samples but the generator holds {self.memory_samples}; "
                "split the drive into segments (Waveform.split)"
            )
        rate = float(sample_rate_Hz)
        if not (math.isfinite(rate) and 1e-6 <= rate <= self.max_sample_rate_Hz):
            raise ConfigError(
                f"sample rate {sample_rate_Hz!r} Sa/s outside 1 uSa/s .. {self.max_sample_rate_Hz:g} Sa/s"
            )
        codes, amplitude, offset = self.dac_scaling(samples)
        if abs(offset) + amplitude / 2 > self.MAX_PEAK_V:
            raise WaveformError(
                f"arb spans {np.min(samples):.4g} .. {np.max(samples):.4g} V, beyond the +-{self.MAX_PEAK_V} V "
                "output range; nothing was sent"
            )
        self.byte_order = "SWAP"
        self.clear_volatile()
        # one IEEE 488.2 block of little-endian int16 (FORM:BORD SWAP), built by pyvisa from the array
        self.write_binary_values(
            f"SOUR1:DATA:ARB:DAC {name},", codes, datatype="h", is_big_endian=False, termination="\n"
        )
        self.arb_name = name
        self.function = "ARB"
        self.sample_rate_Hz = rate
        # offset to 0 first, so no intermediate amplitude/offset pair exceeds the output range
        self.offset_V = 0.0
        self.amplitude_Vpp = amplitude
        self.offset_V = offset
        self.raise_errors(f"uploading arb {name!r} ({samples.size} samples)")
        if verify:
            self.verify_arb(name, codes)
        return {
            "amplitude_Vpp": amplitude,
            "offset_V": offset,
            "samples": int(samples.size),
            "sample_rate_Hz": rate,
        }

    def verify_arb(self, name: str, codes: np.ndarray) -> None:
        """The arb ``name`` holds ``codes``: same point count, same mean and peak-to-peak (as the
        instrument reports them, normalised to +-1), in one query. A transfer that lost, added
        or changed samples raises InstrumentError; the check is as fine as the digits the
        instrument prints (the emulator prints 15)."""
        _arb_name(name)
        reply = self.ask(f"SOUR1:DATA:ATTR:POIN? {name};AVER? {name};PTP? {name}").strip()
        fields = reply.split(";")
        if len(fields) != 3:
            raise InstrumentError(f"malformed arb attributes from the AWG: {reply!r}")
        points = parse_int(fields[0], "arb point count")
        mean, ptp = (parse_float(f, "arb attribute") for f in fields[1:])
        codes = np.asarray(codes, dtype=np.int64)  # int16 peak-to-peak overflows
        want_mean = float(np.mean(codes)) / DAC_FULL_SCALE
        want_ptp = float(np.ptp(codes)) / DAC_FULL_SCALE
        wrong = []
        if points != codes.size:
            wrong.append(f"{points} points instead of {codes.size}")
        for what, got, want, text in (
            ("mean", mean, want_mean, fields[1]),
            ("peak-to-peak", ptp, want_ptp, fields[2]),
        ):
            if not abs(got - want) <= _ATTRIBUTE_RTOL * abs(want) + _last_digit(text) + 1e-12:
                wrong.append(f"{what} {got:.10g} instead of {want:.10g}")
        if wrong:
            raise InstrumentError(
                f"the AWG holds arb {name!r} with {', '.join(wrong)}: the upload was damaged in transfer"
            )

    def playing_state(self) -> AwgState:
        """Function, selected arb and load setting, in one query (a reset changes all three)."""
        reply = self.ask("SOUR1:FUNC?;:SOUR1:FUNC:ARB?;:OUTP1:LOAD?").strip()
        fields = reply.split(";")
        if len(fields) != 3:
            raise InstrumentError(f"malformed AWG state reply: {reply!r}")
        return AwgState(
            parse_choice(_FUNCTIONS, "function")(fields[0]),
            fields[1].strip().strip('"'),
            parse_float(fields[2], "output load"),
        )

    # --- triggering --------------------------------------------------------------------------
    def arm_burst(self, cycles: int = 1, source: str = "BUS") -> None:
        """Play ``cycles`` arb periods per trigger from ``source`` (BUS: :meth:`trigger`)."""
        self.burst_mode = "TRIG"
        self.burst_cycles = cycles
        self.trigger_source = source
        self.burst_enabled = True
        self.raise_errors("arming the burst")

    def trigger(self) -> None:
        """Software (bus) trigger, ``*TRG``."""
        self.write("*TRG")

    def shutdown(self) -> None:
        """Turn the output off (the safe state), confirm it by reading it back, and mark the
        instrument shut down. The read-back also waits until the instrument has processed it."""
        try:
            self.output_enabled = False
            if self.output_enabled:
                raise InstrumentError("AWG output still reports ON after OUTP1 0; switch it off by hand")
        finally:
            super().shutdown()


# --- registrations (entry-point group spinlab.drivers) ---------------------------------------
_KEYSIGHT = r"(Keysight|Agilent) Technologies"
KEYSIGHT_33500B = DriverSpec(
    "keysight-33500b",
    "awg",
    Keysight33500B,
    _KEYSIGHT,
    r"335\d\d[AB]",
    AWG_MODELS["33500B"],
    "Keysight/Agilent 33500B-series waveform generator, binary DAC upload",
)
KEYSIGHT_33600A = DriverSpec(
    "keysight-33600a",
    "awg",
    Keysight33500B,
    _KEYSIGHT,
    r"336\d\d[AB]",
    AWG_MODELS["33600A"],
    "Keysight 33600A-series waveform generator, binary DAC upload",
)
