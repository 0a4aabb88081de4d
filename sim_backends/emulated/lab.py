"""The emulated bench: AWG + DC source -> device model -> oscilloscope, wired like the real one;
a Kepco BOP drives the magnet whose field a Lake Shore 425 reads at the sample.

Signal path on a trigger (``*TRG`` on the AWG with ``TRIG:SOUR BUS``, or ``TRIG``): the AWG's
trigger output pulses the scope's EXTernal input at t = 0; the AWG plays its burst (the arb zero-
order held at its sample rate, scaled by amplitude/offset, seen through the 50-ohm source
impedance into ``device_load_ohm``, so a 50-ohm load setting into a high-Z device doubles); the
device model (a :class:`spinlab.Device`) responds to that drive with the DC source's current as
``bias_A`` (0 with its output off) and, while the magnet supply's output is on, the coil's actual
field as ``field_T`` (a model that takes it; with the supply off the model keeps its own default
field, so benches that never use the magnet behave as before); the response reaches the scope
``trigger_delay_s`` later (cable and detector delay), plus Gaussian input noise ``scope_noise_V``,
and is quantised by the scope ADC. Before the trigger the device is driven at the AWG's idle level
for ``settle_s`` so it starts each capture from its steady state. With the AWG output off the
drive is 0 V.

The spectrum analyser (role ``analyser``) sees the device's RF output through ``rf_gain_dB`` of
RF chain: the device model's power spectral density (``device.spectrum``, from its physics) at
the operating point the instruments hold it at (:meth:`EmulatedLab.device_conditions`: the DC
source's current, and the magnet's field where the lab has one). A model without a spectrum
shows the analyser its noise floor only.

``faults`` (a spec, see :mod:`.faults`) makes the instruments misbehave on purpose; more can be
injected while the lab runs with :meth:`EmulatedLab.inject`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from spinlab.device import Device
from spinlab.errors import ConfigError, SpinlabError
from spinlab.sim_backends.emulated.awg import SOURCE_IMPEDANCE_OHM
from spinlab.sim_backends.emulated.faults import Fault, FaultInjector, FaultLog, parse_faults
from spinlab.sim_backends.emulated.models import EMULATORS, chosen_models
from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import ScpiError
from spinlab.waveform import Waveform


class EmulatedLab:
    """The emulated instruments of each role, sharing one lock and one seeded noise source.

    ``device``: the model between AWG and scope. ``seed``: scope noise generator.
    ``trigger_delay_s``: AWG trigger -> response at the scope. ``scope_noise_V``: RMS input
    noise. ``device_load_ohm``: the device's input impedance seen by the AWG (``math.inf`` for
    high-Z: a 50-ohm load setting then doubles). ``device_resistance_ohm``: DC resistance the
    Keithley sources into (compliance). ``settle_s``: idle drive before the trigger.
    ``max_oversample``: device-model samples per arb sample when the scope samples faster.
    ``max_device_samples``: refuse captures that would need more model samples than this.
    ``faults``: injected faults (a spec string or :class:`~.faults.Fault` objects).
    ``models``: the emulator of each role by driver name (see :mod:`.models`; the built-in
    station's 33500B, InfiniiVision and Keithley 2400 by default).
    """

    AWG_RESOURCE = "TCPIP::127.0.0.1::5025::SOCKET"
    SCOPE_RESOURCE = "TCPIP::127.0.0.1::5026::SOCKET"
    SOURCE_RESOURCE = "GPIB0::24::INSTR"
    ANALYSER_RESOURCE = "GPIB0::20::INSTR"
    #: role -> the VISA resource its emulator answers at in-process (as in ``emulated.toml``)
    RESOURCES = {"awg": AWG_RESOURCE, "scope": SCOPE_RESOURCE, "source": SOURCE_RESOURCE}
    RESOURCES["analyser"] = ANALYSER_RESOURCE
    MAGNET_RESOURCE = "GPIB0::6::INSTR"
    GAUSSMETER_RESOURCE = "GPIB0::12::INSTR"
    RESOURCES.update(magnet=MAGNET_RESOURCE, gaussmeter=GAUSSMETER_RESOURCE)

    def __init__(
        self,
        device: Device,
        *,
        seed: int = 0,
        trigger_delay_s: float = 20e-9,
        scope_noise_V: float = 1e-3,
        device_load_ohm: float = 50.0,
        device_resistance_ohm: float = 100.0,
        settle_s: float = 2e-6,
        max_oversample: int = 8,
        awg_memory_samples: int = 16_000_000,
        max_device_samples: int = 50_000_000,
        faults: str | Sequence[Fault] | None = None,
        models: Mapping[str, str] | None = None,
        rf_gain_dB: float = 0.0,
    ) -> None:
        if not isinstance(device, Device):
            raise ConfigError(f"EmulatedLab needs a spinlab.Device, got {type(device).__name__}")
        for name, value in (
            ("trigger_delay_s", trigger_delay_s),
            ("scope_noise_V", scope_noise_V),
            ("settle_s", settle_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if not device_load_ohm > 0:
            raise ConfigError(f"device_load_ohm must be > 0 (math.inf for high-Z), got {device_load_ohm!r}")
        if not math.isfinite(rf_gain_dB):
            raise ConfigError(f"rf_gain_dB must be a finite number of dB, got {rf_gain_dB!r}")
        if int(max_oversample) < 1:
            raise ConfigError(f"max_oversample must be >= 1, got {max_oversample!r}")
        self.device = device
        self.seed = int(seed)
        self.trigger_delay_s = float(trigger_delay_s)
        self.scope_noise_V = float(scope_noise_V)
        self.device_load_ohm = float(device_load_ohm)
        self.settle_s = float(settle_s)
        self.max_oversample = int(max_oversample)
        self.max_device_samples = int(max_device_samples)
        self.rng = np.random.default_rng(self.seed)
        self.lock = threading.RLock()
        self.awg_memory_samples = int(awg_memory_samples)
        self.device_resistance_ohm = float(device_resistance_ohm)
        #: role -> driver name of the emulator playing it
        self.models = chosen_models(models)
        #: role -> emulated instrument
        self.roles: dict[str, ScpiInstrument] = {
            role: EMULATORS[role][name](self) for role, name in self.models.items()
        }
        self.awg = self.roles["awg"]
        self.scope = self.roles["scope"]
        self.source = self.roles["source"]
        self.magnet = self.roles.get("magnet")
        self.awg.on_trigger = self._on_awg_trigger
        self.scope.acquire = self._acquire
        self.rf_gain_dB = float(rf_gain_dB)
        if "analyser" in self.roles:
            has_spectrum = callable(getattr(device, "spectrum", None))
            self.roles["analyser"].spectrum = self.analyser_input if has_spectrum else None
        self.captures = 0
        #: TCP servers started by :func:`serve_tcp` for this lab (closed by :meth:`close`).
        self.servers: list = []
        self._visa_library = None
        #: every fault injected so far, and which fired (``(spec, event number)``, in order)
        self.faults: tuple[Fault, ...] = ()
        self.fault_log = FaultLog()
        self.inject(faults)

    def inject(self, faults: str | Sequence[Fault] | None) -> tuple[Fault, ...]:
        """Add faults (a spec string, see :mod:`.faults`) to the running lab; returns them."""
        added = parse_faults(faults)
        with self.lock:
            for fault in added:
                instrument = self.roles[fault.instrument]
                if instrument.faults is None:
                    instrument.faults = FaultInjector((), self.seed, self.fault_log)
                instrument.faults.add(len(self.faults), fault, self.seed)
                self.faults += (fault,)
        return added

    @property
    def instruments(self) -> dict[str, ScpiInstrument]:
        """Resource name -> emulator."""
        return {self.RESOURCES[role]: instrument for role, instrument in self.roles.items()}

    def visa_library(self):
        """A pyvisa ``VisaLibraryBase`` reaching these instruments in-process."""
        if self._visa_library is None:
            from spinlab.sim_backends.emulated.visa_backend import EmulatedVisaLibrary

            self._visa_library = EmulatedVisaLibrary.for_lab(self)
        return self._visa_library

    # --- wiring ----------------------------------------------------------------------------
    def _on_awg_trigger(self) -> None:
        try:
            self.scope.trigger_input_edge("EXT")
        except SpinlabError as exc:
            # the device model refused the drive (e.g. above its safety limit): report it where
            # a user looks after triggering, and leave the scope waiting
            raise ScpiError(-200, f"emulated device rejected the drive: {exc}") from None

    def _acquire(
        self, times_s: np.ndarray, channels: Sequence[int], triggered: bool
    ) -> dict[int, np.ndarray]:
        """Input voltage of each scope channel at ``times_s`` (relative to the trigger)."""
        signal = self.device_signal_V(times_s)
        out = {}
        for n in channels:
            clean = signal if n == 1 else np.zeros_like(times_s)
            noise = self.rng.normal(0.0, self.scope_noise_V, times_s.size) if self.scope_noise_V else 0.0
            out[n] = clean + noise
        self.captures += 1
        return out

    def device_signal_V(self, times_s: np.ndarray) -> np.ndarray:
        """Device response (V) as seen at the scope input at ``times_s`` after the trigger."""
        scope_dt = float(times_s[1] - times_s[0]) if times_s.size > 1 else 1e-9
        t_sig = times_s - self.trigger_delay_s
        awg_dt = self.awg.arb_sample_interval_s
        if awg_dt is None:
            tick, oversample = scope_dt, 1
        else:
            oversample = int(min(max(round(awg_dt / scope_dt), 1), self.max_oversample))
            tick = awg_dt / oversample
        first = math.floor((min(float(t_sig[0]), 0.0) - self.settle_s) / tick)
        last = math.ceil(float(t_sig[-1]) / tick) + 1
        count = last - first + 1
        if count > self.max_device_samples:
            raise ConfigError(
                f"emulated capture needs {count} device-model samples (limit {self.max_device_samples}); "
                "shorten the scope record or raise the arb sample interval"
            )
        emf = self.awg.emf_V(first, count, tick, oversample)
        drive = emf * self._divider()
        response = self.device.respond(Waveform(drive, tick, "V", first * tick), self.device_conditions())
        grid = (first + np.arange(count)) * tick
        return np.interp(t_sig, grid, response.samples)

    def device_conditions(self) -> dict[str, float]:
        """The DC operating point the instruments hold the device at: the source's current and,
        where the lab has a magnet, its field."""
        conditions = {"bias_A": float(self.source.output_current_A())}
        if self.magnet is not None and self.magnet.output_on and "field_T" in self.device.condition_names:
            conditions["field_T"] = self.magnet.field_T()  # the coil's actual field, while it is driven
        return conditions

    def analyser_input(self, freqs_Hz: np.ndarray) -> np.ndarray:
        """Power spectral density (W/Hz) at the analyser input: the device model's at its
        operating point, through the RF chain's gain."""
        psd = self.device.spectrum(self.device_conditions(), freqs_Hz)  # type: ignore[attr-defined]
        return np.asarray(psd, dtype=float) * 10 ** (self.rf_gain_dB / 10)

    def coil_field_T(self) -> float:
        """The field at the sample (what the gaussmeter's probe sees): the magnet's, else 0."""
        return 0.0 if self.magnet is None else self.magnet.field_T()

    def _divider(self) -> float:
        if math.isinf(self.device_load_ohm):
            return 1.0
        return self.device_load_ohm / (self.device_load_ohm + SOURCE_IMPEDANCE_OHM)

    def close(self) -> None:
        """Stop any TCP servers started for this lab (the device is closed by its owner)."""
        for servers in list(self.servers):
            servers.close()
        self.servers.clear()

    def identity(self) -> dict:
        return {
            **{role: instrument.IDN for role, instrument in self.roles.items()},
            "seed": self.seed,
            "trigger_delay_s": self.trigger_delay_s,
            "scope_noise_V": self.scope_noise_V,
            "device_load_ohm": self.device_load_ohm,
            "faults": ",".join(str(f) for f in self.faults),
            "rf_gain_dB": self.rf_gain_dB,
        }
