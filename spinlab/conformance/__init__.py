"""The conformance kit: does a driver keep its role's promises?

Why: the Bench's safety and retries rest on a few promises every driver of a role makes (see
:mod:`spinlab.instruments.roles`); a driver for a new model that breaks one breaks the bench in
ways its own tests do not show. The kit checks them through the real stack (driver -> pyvisa ->
instrument), so the same checks run against spinlab's emulator of the model (the default), a
real instrument (``resource``) or a recorded dialogue of one (``transcript``)::

    python -m spinlab.conformance keysight-33500b                     # the emulated instrument
    python -m spinlab.conformance keysight-33500b --resource TCPIP::10.0.0.5::5025::SOCKET \\
        --visa-library @py --record dialogues/                        # a real one, recorded
    python -m spinlab.conformance keysight-33500b --transcript dialogues/   # replayed, no instrument
    pytest -p spinlab.conformance.plugin --pyargs spinlab.conformance --driver keysight-33500b  # the same

The promises (:data:`PROMISES`, by role): outputs off on close (``shutdown()``, read back on a
fresh connection), state read-back (what was set is what the instrument reports), limits
refused before sending (an out-of-range request raises and writes nothing), binary round trip
(an arb uploaded and verified; a scope record captured and read whole), recovery after a reset
(``*RST`` mid-run shows in the read-back, and the driver works again once its state is
re-applied). A broken one raises :class:`BrokenPromise`, which names it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spinlab.errors import ConfigError, SpinlabError
from spinlab.instruments.drivers import DriverSpec, find_driver, installed_drivers
from spinlab.instruments.transcript import (
    RecordingVisaLibrary,
    ReplayVisaLibrary,
    Transcript,
    read_transcript,
)

#: the seed of every request the kit makes (a replay must see the same bytes)
SEED = 22
#: the arb the kit uploads
ARB = "CONFORM"


class BrokenPromise(SpinlabError, AssertionError):
    """The driver broke ``promise`` (its name leads the message)."""

    def __init__(self, promise: str, detail: str) -> None:
        super().__init__(f"broken promise '{promise}': {detail}")
        self.promise = promise


class NotApplicable(Exception):
    """The check cannot run on this target (say why: pytest skips it)."""


# --- what is checked ---------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    """One driver on one instrument (emulated, real or replayed); :meth:`open` builds a driver
    on a fresh connection, every byte of which the ``transcript`` sees."""

    spec: DriverSpec
    resource: str
    library: Any  # the pyvisa library the driver talks through (recording)
    transcript: Transcript
    lab: Any = None  # the EmulatedLab behind an emulated target
    replay: bool = False
    drivers: list[Any] = dataclasses.field(default_factory=list)

    @property
    def kind(self) -> str:
        return "replayed" if self.replay else ("emulated" if self.lab is not None else "real")

    def open(self) -> Any:
        driver = self.spec.driver(self.resource, visa_library=self.library, timeout=5000)
        self.drivers.append(driver)
        return driver

    @property
    def can_trigger(self) -> bool:
        """Whether the kit can trigger a capture: the emulated AWG's edge, or a replay's record."""
        return self.lab is not None or self.replay

    def trigger(self) -> None:
        """A trigger edge at the scope's EXT input (the emulated AWG's; a replay recorded it)."""
        if self.lab is not None:
            self.lab.roles["scope"].trigger_input_edge("EXT")

    def set_field(self, field_T: float) -> None:
        """The field at the emulated gaussmeter's probe; a real probe's field is the lab's, so a
        check needing one is not applicable there (a replay recorded the readings)."""
        if self.lab is not None:
            self.lab.roles["gaussmeter"].field_source = lambda: field_T
        elif not self.replay:
            raise NotApplicable(
                "the check needs a known field at the probe: run it on the emulated gaussmeter"
            )

    def close(self) -> None:
        for driver in self.drivers:
            with contextlib.suppress(Exception):
                driver.adapter.close()
        self.transcript.close()
        if self.lab is not None:
            self.lab.close()


def driver_spec(name: str | DriverSpec) -> DriverSpec:
    """A registered driver by name, a ``module:ATTRIBUTE`` naming a DriverSpec (a lab's driver
    not installed yet), or a spec."""
    if isinstance(name, DriverSpec):
        return name
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            spec = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load driver {name!r}: {exc}") from None
        if not isinstance(spec, DriverSpec):
            raise ConfigError(f"{name!r} is a {type(spec).__name__}, not a spinlab DriverSpec")
        return spec
    found = installed_drivers().get(name)
    if found is None:
        raise ConfigError(f"no installed driver {name!r}; installed: {', '.join(installed_drivers())}")
    return find_driver(name, found.role)


def emulator_name(spec: DriverSpec) -> str | None:
    """The emulator (``sim_backends.emulated.models``) of the model ``spec`` drives: the one of
    its name, else the one whose ``*IDN?`` it serves; None when spinlab emulates none."""
    from spinlab.sim_backends.emulated.models import EMULATORS

    emulators = EMULATORS.get(spec.role, {})
    if spec.name in emulators:
        return spec.name
    return next((name for name in emulators if spec.serves(_emulator_idn(spec.role, name))), None)


def _emulator_idn(role: str, name: str) -> str:
    from spinlab.sim_backends.emulated.lab import EmulatedLab
    from spinlab.testing import Doubler

    lab = EmulatedLab(Doubler(), models={role: name})
    return str(lab.roles[role].IDN)


@contextlib.contextmanager
def target(
    driver: str | DriverSpec,
    *,
    resource: str | None = None,
    visa_library: str = "",
    transcript: str | Path | None = None,
    record: str | Path | None = None,
    check: str = "",
) -> Iterator[Target]:
    """A :class:`Target` for ``driver``: on its emulated instrument, the instrument at
    ``resource`` (through ``visa_library``), or replaying ``transcript`` (the file of this
    ``check``, or a folder holding one per check). ``record``: a folder for this check's
    transcript (``DRIVER-CHECK.jsonl``)."""
    spec = driver_spec(driver)
    lab = None
    replay = transcript is not None
    if replay:
        path = Path(transcript)  # type: ignore[arg-type]
        if path.is_dir():
            path = path / f"{spec.name}-{check}.jsonl"
        header, _ = read_transcript(path)
        resources = [r for r, role in header.get("resources", {}).items() if role == spec.role]
        if len(resources) != 1:
            raise ConfigError(
                f"{path} holds no single {spec.role} to replay (resources: {header['resources']})"
            )
        inner: Any = ReplayVisaLibrary.from_file(path)
        resource = resources[0]
    elif resource is None:
        name = emulator_name(spec)
        if name is None:
            raise ConfigError(
                f"spinlab emulates no instrument that driver {spec.name!r} serves; give --resource "
                "to check it against the real instrument"
            )
        from spinlab.sim_backends.emulated.lab import EmulatedLab
        from spinlab.testing import Doubler

        lab = EmulatedLab(Doubler(), seed=SEED, models={spec.role: name}, scope_noise_V=0.0)
        resource, inner = lab.RESOURCES[spec.role], lab.visa_library()
    else:
        inner = visa_library
    file = None
    if record is not None:
        Path(record).mkdir(parents=True, exist_ok=True)
        file = Path(record) / f"{spec.name}-{check or 'session'}.jsonl"
        file.unlink(missing_ok=True)
    transcript_ = Transcript(file, {resource: spec.role}, keep_replies=True)
    library = RecordingVisaLibrary.wrap(inner, transcript_)
    made = Target(spec, resource, library, transcript_, lab=lab, replay=replay)
    try:
        yield made
    finally:
        made.close()
    if replay and inner.remaining():
        raise BrokenPromise(check, f"the driver did not send all the recorded messages: {inner.remaining()}")


# --- the promises ------------------------------------------------------------------------------
def _is_query(message: bytes) -> bool:
    """Whether every command of ``message`` is a query (it asks, it changes nothing)."""
    return all(part.strip().endswith(b"?") for part in message.split(b";"))


def _settings_since(t: Target, before: int) -> list[bytes]:
    return [message for message in t.transcript.writes[before:] if not _is_query(message)]


@contextlib.contextmanager
def _sends_nothing(promise: str, t: Target, request: str) -> Iterator[None]:
    """The block must raise before sending the instrument any setting (queries that learn the
    instrument's limits, such as ``*OPT?``, change nothing and may come first)."""
    before = len(t.transcript.writes)
    try:
        yield
    except Exception:  # noqa: BLE001 - any refusal counts, as long as it came first
        sent = _settings_since(t, before)
        if sent:
            raise BrokenPromise(
                promise,
                f"{request} was refused only after sending {len(sent)} message(s), first {sent[0][:60]!r}",
            ) from None
        return
    sent = t.transcript.writes[before:]
    raise BrokenPromise(promise, f"{request} was accepted ({len(sent)} message(s) sent)")


def _accepted(promise: str, t: Target, request: str, apply: Callable[[], object]) -> bool:
    """Apply a setting a model may lack: True if taken, False if refused before sending."""
    before = len(t.transcript.writes)
    try:
        apply()
    except Exception:  # noqa: BLE001 - a refusal is fine, as long as it came first
        if _settings_since(t, before):
            raise BrokenPromise(promise, f"{request} was refused only after sending a setting") from None
        return False
    return True


def _cap(spec: DriverSpec, name: str, default: float) -> float:
    return float(getattr(spec.capabilities, name, default) or default)


def _fresh_read(t: Target, read: Callable[[Any], Any]) -> Any:
    """``read(driver)`` on a new connection: the instrument's answer, not a driver's memory."""
    driver = t.open()
    try:
        return read(driver)
    finally:
        driver.adapter.close()


def _check_playing(promise: str, awg: Any, load: float) -> None:
    state = awg.playing_state()
    if state.function != "ARB" or state.arb.upper() != ARB or not _same(state.load_ohm, load):
        raise BrokenPromise(
            promise, f"playing_state() reports {tuple(state)}, not ('ARB', {ARB!r}, {load:g}) as set"
        )


def _same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-6)


def _arb(spec: DriverSpec, awg: Any) -> tuple[np.ndarray, float]:
    rate = min(_cap(spec, "max_sample_rate_Hz", 1e8), float(awg.capabilities.max_sample_rate_Hz)) / 10
    samples = np.random.default_rng(SEED).uniform(-0.5, 0.5, 4096)
    return samples, rate


# AWG
def awg_outputs_off_on_close(t: Target) -> None:
    promise = "outputs off on close"
    awg = t.open()
    awg.output_enabled = True
    awg.shutdown()
    awg.adapter.close()
    if _fresh_read(t, lambda a: a.output_enabled):
        raise BrokenPromise(promise, "the AWG output is still on after shutdown() (read on a new connection)")


def awg_state_read_back(t: Target) -> None:
    promise = "state read-back"
    awg = t.open()
    for load in (math.inf, 50.0):
        if not _accepted(
            promise, t, f"a load of {load:g} ohm", functools.partial(setattr, awg, "output_load_ohm", load)
        ):
            continue  # a model without that load setting refuses it before sending: fine
        got = awg.output_load_ohm
        if not _same(got, load):
            raise BrokenPromise(promise, f"output_load_ohm set to {load:g} reads back {got!r}")
    for state in (True, False):
        awg.output_enabled = state
        if awg.output_enabled is not state:
            raise BrokenPromise(promise, f"output_enabled set to {state} reads back {awg.output_enabled!r}")
    samples, rate = _arb(t.spec, awg)
    awg.upload_arb(ARB, samples, rate)
    _check_playing(promise, awg, 50.0)


def awg_limits_refused_before_sending(t: Target) -> None:
    promise = "limits refused before sending"
    awg = t.open()
    samples, rate = _arb(t.spec, awg)
    peak = _cap(t.spec, "max_peak_V", 5.0)
    memory = int(awg.memory_samples)
    top_rate = float(awg.capabilities.max_sample_rate_Hz)
    requests = {
        f"an arb reaching {2 * peak:g} V (range +-{peak:g} V)": (samples * 4 * peak, rate),
        f"a sample rate of {2 * top_rate:g} Sa/s (max {top_rate:g})": (samples, 2 * top_rate),
        f"an arb of {memory + 1} samples (memory {memory})": (np.broadcast_to(0.1, (memory + 1,)), rate),
        "an arb holding NaN": (np.where(np.arange(samples.size) == 7, np.nan, samples), rate),
    }
    for request, (bad, bad_rate) in requests.items():
        with _sends_nothing(promise, t, request):
            awg.upload_arb(ARB, bad, bad_rate)


def awg_binary_round_trip(t: Target) -> None:
    promise = "binary round trip"
    awg = t.open()
    awg.output_load_ohm = 50.0
    samples, rate = _arb(t.spec, awg)
    try:
        awg.upload_arb(ARB, samples, rate, verify=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the verified upload is the finding
        raise BrokenPromise(
            promise, f"upload_arb(verify=True) of {samples.size} samples failed: {exc}"
        ) from exc
    _check_playing(promise, awg, 50.0)


def awg_recovery_after_reset(t: Target) -> None:
    promise = "recovery after reset"
    awg = t.open()
    awg.clear_errors()
    awg.output_load_ohm = 50.0
    samples, rate = _arb(t.spec, awg)
    awg.upload_arb(ARB, samples, rate, verify=True)
    awg.adapter.write("*RST")
    state = awg.playing_state()
    if state.function == "ARB" and state.arb.upper() == ARB and _same(state.load_ohm, 50.0):
        raise BrokenPromise(
            promise, f"playing_state() after *RST still reports {tuple(state)}: a reset goes unseen"
        )
    awg.clear_errors()
    awg.output_load_ohm = 50.0
    awg.upload_arb(ARB, samples, rate, verify=True)
    _check_playing(promise, awg, 50.0)
    errors = awg.check_errors()
    if errors:
        raise BrokenPromise(promise, f"errors after re-applying the state: {errors}")


# scope
def _capture_settings(scope: Any) -> dict[str, Any]:
    rates = sorted(float(r) for r in scope.SAMPLE_RATES_Hz)
    rate = min((r for r in rates if r >= 1e8), default=rates[-1])
    return {"duration_s": 2000 / rate, "sample_rate_Hz": rate, "full_scale_V": 1.0, "trigger_level_V": 0.5}


def _capture(promise: str, t: Target, scope: Any, record: bool = True) -> None:
    """Configure, arm and (where the kit can trigger) capture and read a record whole; without a
    trigger a ``record`` is not applicable, and the check ends armed."""
    settings = _capture_settings(scope)
    got = scope.configure_capture(1, **settings)
    scope.arm_single()
    if not scope.waiting_for_trigger():
        raise BrokenPromise(promise, "waiting_for_trigger() is False after arm_single()")
    if not t.can_trigger:
        if record:
            raise NotApplicable("a capture needs a trigger: run it on the emulated instrument or the bench")
        return
    t.trigger()
    scope.wait_acquired(5.0)
    wave = scope.read_waveform(1)
    scope.check_in_step("the conformance capture")
    values = np.asarray(wave.samples, dtype=np.float64)
    if wave.n != got["points"] or not math.isclose(wave.dt_s * got["sample_rate_Hz"], 1.0, rel_tol=1e-6):
        raise BrokenPromise(
            promise,
            f"read_waveform gave {wave.n} points at {1 / wave.dt_s:.6g} Sa/s, not the {got['points']} "
            f"at {got['sample_rate_Hz']:.6g} Sa/s configured",
        )
    if not np.all(np.isfinite(values)):
        raise BrokenPromise(promise, "read_waveform holds non-finite values")


def scope_state_read_back(t: Target) -> None:
    promise = "state read-back"
    scope = t.open()
    settings = _capture_settings(scope)
    got = scope.configure_capture(1, **settings)
    want = math.ceil(settings["duration_s"] * settings["sample_rate_Hz"] - 1e-9)
    if (
        not math.isclose(got["sample_rate_Hz"], settings["sample_rate_Hz"], rel_tol=1e-9)
        or got["points"] < want
    ):
        raise BrokenPromise(promise, f"configure_capture reports {got} for {settings}")
    # what the scope holds shows in a capture: its record has the points at the rate reported
    _capture(promise, t, scope, record=False)


def scope_limits_refused_before_sending(t: Target) -> None:
    promise = "limits refused before sending"
    scope = t.open()
    settings = _capture_settings(scope)
    top = max(float(r) for r in scope.SAMPLE_RATES_Hz)
    memory = _cap(t.spec, "memory_points", 1e9)
    requests = {
        f"a sample rate of {10 * top:g} Sa/s (max {top:g})": {**settings, "sample_rate_Hz": 10 * top},
        "a negative full scale": {**settings, "full_scale_V": -1.0},
        f"a capture of {4 * memory:g} points (memory {memory:g})": {
            **settings,
            "duration_s": 4 * memory / settings["sample_rate_Hz"],
        },
    }
    for request, bad in requests.items():
        with _sends_nothing(promise, t, request):
            scope.configure_capture(1, **bad)


def scope_binary_round_trip(t: Target) -> None:
    _capture("binary round trip", t, t.open())


def scope_recovery_after_reset(t: Target) -> None:
    promise = "recovery after reset"
    scope = t.open()
    scope.clear_errors()
    scope.configure_capture(1, **_capture_settings(scope))
    scope.adapter.write("*RST")
    scope.clear_errors()
    _capture(promise, t, scope, record=False)
    errors = scope.check_errors()
    if errors:
        raise BrokenPromise(promise, f"errors after re-applying the state: {errors}")


# source
def _bias(spec: DriverSpec) -> float:
    return min(1e-3, _cap(spec, "max_current_A", 1e-3) / 10)


def _set_bias(source: Any, current: float) -> None:
    source.source_mode = "current"
    source.compliance_voltage = 2.0
    source.source_current = current
    source.source_enabled = True


def source_outputs_off_on_close(t: Target) -> None:
    promise = "outputs off on close"
    source = t.open()
    _set_bias(source, _bias(t.spec))
    source.shutdown()
    source.adapter.close()
    if _fresh_read(t, lambda s: s.output_state().on):
        raise BrokenPromise(
            promise, "the source output is still on after shutdown() (read on a new connection)"
        )


def source_state_read_back(t: Target) -> None:
    promise = "state read-back"
    source = t.open()
    current = _bias(t.spec)
    _set_bias(source, current)
    state = source.output_state()
    if not (state.on and state.function == "CURR" and math.isclose(state.current_A, current, rel_tol=1e-5)):
        raise BrokenPromise(promise, f"output_state() reports {tuple(state)} after sourcing {current:g} A")
    source.source_enabled = False
    if source.output_state().on or source.source_enabled:
        raise BrokenPromise(promise, "the output reads back on after source_enabled = False")


def source_limits_refused_before_sending(t: Target) -> None:
    promise = "limits refused before sending"
    source = t.open()
    source.source_mode = "current"
    top_A = _cap(t.spec, "max_current_A", 1.0)
    top_V = _cap(t.spec, "max_voltage_V", 200.0)
    for request, member, value in (
        (f"a current of {2 * top_A:g} A (max {top_A:g})", "source_current", 2 * top_A),
        (f"a compliance of {2 * top_V:g} V (max {top_V:g})", "compliance_voltage", 2 * top_V),
    ):
        with _sends_nothing(promise, t, request):
            setattr(source, member, value)


def source_recovery_after_reset(t: Target) -> None:
    promise = "recovery after reset"
    source = t.open()
    source.clear_errors()
    current = _bias(t.spec)
    _set_bias(source, current)
    source.adapter.write("*RST")
    if source.output_state().on:
        raise BrokenPromise(
            promise, "output_state() after *RST still reports the output on: a reset goes unseen"
        )
    source.clear_errors()
    _set_bias(source, current)
    state = source.output_state()
    if not (state.on and math.isclose(state.current_A, current, rel_tol=1e-5)):
        raise BrokenPromise(promise, f"output_state() reports {tuple(state)} after re-applying {current:g} A")
    source.shutdown()


# magnet supply
def _magnet_current(spec: DriverSpec) -> tuple[float, float]:
    """A small coil current and a voltage limit well inside the rating."""
    return min(0.5, _cap(spec, "max_current_A", 1.0) / 10), min(5.0, _cap(spec, "max_voltage_V", 10.0) / 4)


def _drive_coil(magnet: Any, current: float, volts: float) -> None:
    magnet.function_mode = "CURR"
    magnet.voltage_limit_V = volts
    magnet.current_setpoint_A = current
    magnet.output_enabled = True


def _check_magnet_state(promise: str, magnet: Any, current: float, volts: float) -> None:
    state = magnet.output_state()
    if not (
        state.on
        and state.mode == "CURR"
        and math.isclose(state.setpoint_A, current, rel_tol=1e-5)
        and math.isclose(state.voltage_limit_V, volts, rel_tol=1e-5)
    ):
        raise BrokenPromise(
            promise, f"output_state() reports {tuple(state)} after driving {current:g} A at {volts:g} V"
        )


def magnet_outputs_off_on_close(t: Target) -> None:
    promise = "outputs off on close"
    magnet = t.open()
    _drive_coil(magnet, *_magnet_current(t.spec))
    magnet.shutdown()
    magnet.adapter.close()
    state = _fresh_read(t, lambda m: m.output_state())
    if state.on:
        raise BrokenPromise(
            promise,
            f"the magnet supply's output is still on after shutdown() (read on a new connection: "
            f"{tuple(state)})",
        )


def magnet_state_read_back(t: Target) -> None:
    promise = "state read-back"
    magnet = t.open()
    current, volts = _magnet_current(t.spec)
    _drive_coil(magnet, current, volts)
    _check_magnet_state(promise, magnet, current, volts)
    magnet.current_setpoint_A = 0.0
    magnet.output_enabled = False
    state = magnet.output_state()
    if state.on or magnet.output_enabled:
        raise BrokenPromise(promise, f"the output reads back on after output_enabled = False: {tuple(state)}")


def magnet_limits_refused_before_sending(t: Target) -> None:
    promise = "limits refused before sending"
    magnet = t.open()
    top_A = _cap(t.spec, "max_current_A", 12.0)
    top_V = _cap(t.spec, "max_voltage_V", 36.0)
    for request, member, value in (
        (f"a coil current of {2 * top_A:g} A (rating {top_A:g})", "current_setpoint_A", 2 * top_A),
        (f"a coil current of {-2 * top_A:g} A (rating {top_A:g})", "current_setpoint_A", -2 * top_A),
        (f"a voltage limit of {2 * top_V:g} V (rating {top_V:g})", "voltage_limit_V", 2 * top_V),
    ):
        with _sends_nothing(promise, t, request):
            setattr(magnet, member, value)


def magnet_recovery_after_reset(t: Target) -> None:
    promise = "recovery after reset"
    magnet = t.open()
    magnet.clear_errors()
    current, volts = _magnet_current(t.spec)
    _drive_coil(magnet, current, volts)
    magnet.adapter.write("*RST")
    state = magnet.output_state()
    if state.on and state.mode == "CURR" and math.isclose(state.setpoint_A, current, rel_tol=1e-5):
        raise BrokenPromise(
            promise, f"output_state() after *RST still reports {tuple(state)}: a reset goes unseen"
        )
    magnet.clear_errors()
    _drive_coil(magnet, current, volts)
    _check_magnet_state(promise, magnet, current, volts)
    errors = magnet.check_errors()
    magnet.shutdown()
    if errors:
        raise BrokenPromise(promise, f"errors after re-applying the state: {errors}")


# gaussmeter
#: the field the kit puts at the emulated probe (T), read on a range that holds it
FIELD_T = 0.1


def gaussmeter_reading_and_range_read_back(t: Target) -> None:
    promise = "reading and range read-back"
    meter = t.open()
    t.set_field(FIELD_T)
    meter.auto_range = True
    if meter.auto_range is not True:
        raise BrokenPromise(promise, "auto_range set to True reads back False")
    field = meter.field_T()
    full = meter.range_T()
    if not (math.isfinite(field) and full > 0 and abs(field) <= full):
        raise BrokenPromise(promise, f"field_T() {field!r} T is not a reading within the range's {full!r} T")
    if t.lab is not None and not math.isclose(field, FIELD_T, abs_tol=2e-3):
        raise BrokenPromise(promise, f"field_T() reads {field:.6g} T with {FIELD_T:g} T at the probe")
    meter.auto_range = False
    if meter.auto_range is not False or meter.range_T() != full:
        raise BrokenPromise(
            promise, f"auto range off reads back {meter.auto_range!r}, range {meter.range_T()!r} T"
        )


def gaussmeter_overload_raises(t: Target) -> None:
    promise = "overload raises"
    meter = t.open()
    t.set_field(FIELD_T)
    meter.auto_range = True
    meter.field_T()  # auto ranging settles on a range holding the field
    meter.auto_range = False
    t.set_field(100 * meter.range_T())  # far beyond the range it holds now
    try:
        got = meter.field_T()
    except SpinlabError:
        return
    raise BrokenPromise(promise, f"an overloaded reading (field beyond the range) passed for {got!r} T")


# analyser
def _sweep_settings(spec: DriverSpec) -> dict[str, Any]:
    top = _cap(spec, "max_frequency_Hz", 3e9)
    return {"center_Hz": min(5e9, top / 2), "span_Hz": 50e6, "rbw_Hz": 1e6, "points": 401}


def _check_trace(promise: str, t: Target, trace: Any, settings: dict[str, Any], before: int) -> None:
    points = int(settings["points"])
    freqs = np.asarray(trace.frequency_Hz, dtype=np.float64)
    power = np.asarray(trace.power_dBm, dtype=np.float64)
    if power.size != points or freqs.size != points:
        raise BrokenPromise(
            promise, f"measure() gave {power.size} powers, {freqs.size} frequencies for {points} points"
        )
    if not np.all(np.isfinite(power)):
        raise BrokenPromise(promise, "measure() holds non-finite powers")
    start, stop = (
        settings["center_Hz"] - settings["span_Hz"] / 2,
        settings["center_Hz"] + settings["span_Hz"] / 2,
    )
    if not (math.isclose(freqs[0], start, rel_tol=1e-9) and math.isclose(freqs[-1], stop, rel_tol=1e-9)):
        raise BrokenPromise(
            promise, f"the trace runs {freqs[0]:.9g} .. {freqs[-1]:.9g} Hz, not {start:.9g} .. {stop:.9g}"
        )
    blocks = _block_lengths(t.transcript.replies[before:])
    if not any(length in (4 * points, 8 * points) for length in blocks):
        raise BrokenPromise(
            promise, f"no binary block of {points} float32/64 values was read (block bytes: {blocks})"
        )


def _block_lengths(replies: list[bytes]) -> list[int]:
    """The declared lengths of the IEEE 488.2 definite-length blocks among ``replies`` that
    arrived whole (a block may come in several reads: binary data holds newlines)."""
    lengths = []
    for i, reply in enumerate(replies):
        if len(reply) < 2 or reply[:1] != b"#" or not reply[1:2].isdigit() or reply[1:2] == b"0":
            continue
        digits = int(reply[1:2])
        field = reply[2 : 2 + digits]
        if field.isdigit() and sum(map(len, replies[i:])) >= 2 + digits + int(field):
            lengths.append(int(field))
    return lengths


def _same_axis(trace: Any, settings: dict[str, Any]) -> bool:
    freqs = np.asarray(trace.frequency_Hz, dtype=np.float64)
    start = settings["center_Hz"] - settings["span_Hz"] / 2
    return freqs.size == int(settings["points"]) and math.isclose(freqs[0], start, rel_tol=1e-9)


def analyser_binary_round_trip(t: Target) -> None:
    promise = "binary round trip"
    analyser = t.open()
    settings = analyser.configure(**_sweep_settings(t.spec))
    before = len(t.transcript.replies)
    _check_trace(promise, t, analyser.measure(), settings, before)


def analyser_settings_read_back(t: Target) -> None:
    promise = "settings read-back"
    analyser = t.open()
    want = _sweep_settings(t.spec)
    got = analyser.configure(**want)
    for key in ("center_Hz", "span_Hz", "points"):
        if not math.isclose(float(got[key]), float(want[key]), rel_tol=1e-9):
            raise BrokenPromise(promise, f"configure() reports {key} = {got[key]!r} for {want[key]!r}")
    if not 0.5 <= float(got["rbw_Hz"]) / want["rbw_Hz"] <= 2:
        raise BrokenPromise(
            promise, f"configure() reports an RBW of {got['rbw_Hz']!r} Hz for {want['rbw_Hz']:g}"
        )


def analyser_recovery_after_reset(t: Target) -> None:
    promise = "recovery after reset"
    analyser = t.open()
    analyser.clear_errors()
    want = _sweep_settings(t.spec)
    settings = analyser.configure(**want)
    analyser.adapter.write("*RST")
    try:
        after = analyser.measure()
    except SpinlabError:  # refusing the reset instrument's trace is seeing the reset; as the
        after = None  # bench does after a fault, go on on a fresh connection (no stale reply)
        analyser.adapter.close()
        analyser = t.open()
    if after is not None and _same_axis(after, settings):
        raise BrokenPromise(
            promise, "measure() after *RST gives a trace on the configured axis: a reset goes unseen"
        )
    analyser.clear_errors()
    settings = analyser.configure(**want)
    before = len(t.transcript.replies)
    _check_trace(promise, t, analyser.measure(), settings, before)
    errors = analyser.check_errors()
    if errors:
        raise BrokenPromise(promise, f"errors after re-applying the settings: {errors}")


# any role
def identity_and_error_queue(t: Target) -> None:
    promise = "identity and error queue"
    driver = t.open()
    if not t.spec.serves(driver.id):
        raise BrokenPromise(promise, f"the driver does not serve the instrument it answers: {driver.id!r}")
    driver.clear_errors()
    if driver.check_errors():
        raise BrokenPromise(promise, "check_errors() is not empty right after clear_errors()")


Check = Callable[[Target], None]
#: role -> check name -> check (a role spinlab has no table for gets the checks of any role)
PROMISES: dict[str, dict[str, Check]] = {
    "awg": {
        "outputs-off-on-close": awg_outputs_off_on_close,
        "state-read-back": awg_state_read_back,
        "limits-refused-before-sending": awg_limits_refused_before_sending,
        "binary-round-trip": awg_binary_round_trip,
        "recovery-after-reset": awg_recovery_after_reset,
    },
    "scope": {
        "state-read-back": scope_state_read_back,
        "limits-refused-before-sending": scope_limits_refused_before_sending,
        "binary-round-trip": scope_binary_round_trip,
        "recovery-after-reset": scope_recovery_after_reset,
    },
    "source": {
        "outputs-off-on-close": source_outputs_off_on_close,
        "state-read-back": source_state_read_back,
        "limits-refused-before-sending": source_limits_refused_before_sending,
        "recovery-after-reset": source_recovery_after_reset,
    },
    "magnet": {
        "outputs-off-on-close": magnet_outputs_off_on_close,
        "state-read-back": magnet_state_read_back,
        "limits-refused-before-sending": magnet_limits_refused_before_sending,
        "recovery-after-reset": magnet_recovery_after_reset,
    },
    "gaussmeter": {
        "reading-and-range-read-back": gaussmeter_reading_and_range_read_back,
        "overload-raises": gaussmeter_overload_raises,
    },
    "analyser": {
        "binary-round-trip": analyser_binary_round_trip,
        "settings-read-back": analyser_settings_read_back,
        "recovery-after-reset": analyser_recovery_after_reset,
    },
}
ANY_ROLE: dict[str, Check] = {"identity-and-error-queue": identity_and_error_queue}


def promises(role: str) -> dict[str, Check]:
    """The checks of ``role``."""
    return {**ANY_ROLE, **PROMISES.get(role, {})}


def check(driver: str | DriverSpec, name: str, **where: Any) -> None:
    """Run the check ``name`` on ``driver`` (``where``: see :func:`target`); raises
    :class:`BrokenPromise` naming what broke, :class:`NotApplicable` when it cannot run there."""
    spec = driver_spec(driver)
    run = promises(spec.role).get(name)
    if run is None:
        raise ConfigError(
            f"no check {name!r} for a {spec.role}; its checks: {', '.join(promises(spec.role))}"
        )
    with target(spec, check=name, **where) as t:
        run(t)


__all__ = [
    "ANY_ROLE",
    "BrokenPromise",
    "NotApplicable",
    "PROMISES",
    "Target",
    "check",
    "driver_spec",
    "emulator_name",
    "promises",
    "target",
]
