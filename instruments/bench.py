"""The Bench: an AWG, an oscilloscope and a DC bias source that together act as a Device.

``Bench.respond`` turns a batch of drives into AWG records (packing short drives, splitting long
ones to fit the AWG and scope memory), plays each record with a software trigger, captures the
device response on the scope, scales it with the preamble, aligns it by the calibrated delay,
averages it onto the drive's time grid and undoes the calibrated gains. The same code drives a
real station (``open_bench("lab.toml")``) and the emulated one (``open_bench("emulated")``),
where the instruments are SCPI emulators wired to a physics model.

Output policy (why): the AWG output is on only while a record plays and is switched off after
every capture, so nothing drives the device between calls. The bias current stays on between
successful calls (re-ramping a DC source for every call adds settling transients and time),
and every output - AWG and bias - is switched off on any exception, on Ctrl-C and at ``close()``.
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spinlab.device import Device
from spinlab.errors import ConfigError, InstrumentError, SafetyLimitError
from spinlab.instruments.station import Station, builtin_station, load_station

log = logging.getLogger("spinlab.bench")

#: Shortest record the AWG accepts; shorter records are padded with zeros (ignored).
MIN_RECORD_SAMPLES = 32
#: Name of the arbitrary waveform in AWG memory.
ARB_NAME = "SPINLAB"
#: ``:OPERegister:CONDition?`` bit of an InfiniiVision that is armed and waiting for a trigger.
WAIT_TRIGGER_BIT = 32


# --- record planning (pure functions: what to play, where each response sample belongs) ----
@dataclass(frozen=True)
class Record:
    """One AWG record: ``samples`` are played; samples ``[keep, keep + length)`` of the response
    are the timeline samples ``[start, start + length)``. The first ``keep`` samples replay the
    timeline before ``start`` so the device's state is continuous across a split."""

    samples: np.ndarray
    start: int
    keep: int
    length: int


@dataclass(frozen=True)
class Plan:
    """How a batch of equal-length drives is laid out on one timeline of AWG records.

    The timeline is ``[settle zeros, drive 0, settle zeros, drive 1, ...]``; ``records`` tile it.
    """

    records: tuple[Record, ...]
    batch: int
    n: int
    settle: int

    @property
    def timeline_length(self) -> int:
        return self.batch * (self.settle + self.n)

    def unpack(self, timeline_response: np.ndarray) -> np.ndarray:
        """Timeline response -> ``(batch, n)`` responses of the drives."""
        item = self.settle + self.n
        return timeline_response.reshape(self.batch, item)[:, self.settle:]


def plan_records(drives: np.ndarray, *, settle: int, overlap: int, max_record: int) -> Plan:
    """Pack ``drives`` (batch, n) into AWG records of at most ``max_record`` samples.

    Whole drives (each preceded by ``settle`` zeros) are packed greedily; a record ends at a drive
    boundary whenever the next drive does not fit. A drive longer than a record is split, and
    every continuation record starts by replaying ``overlap`` timeline samples that are discarded.
    """
    drives = np.atleast_2d(np.asarray(drives, dtype=np.float64))
    batch, n = drives.shape
    if settle < 0 or overlap < 0:
        raise ValueError("settle and overlap must be >= 0")
    if overlap >= max_record:
        raise ConfigError(
            f"segment overlap ({overlap} samples) must be shorter than the AWG record "
            f"({max_record} samples); lower [segmentation] overlap_s or use a coarser drive dt"
        )
    item = settle + n
    timeline = np.zeros((batch, item))
    timeline[:, settle:] = drives
    timeline = timeline.reshape(-1)
    total = timeline.size
    records = []
    start = 0
    while start < total:
        pre = 0 if start % item == 0 else min(overlap, start)
        end = min(start + max_record - pre, total)
        if end < total:
            boundary = (end // item) * item
            if boundary > start:
                end = boundary
        samples = timeline[start - pre:end]
        if samples.size < MIN_RECORD_SAMPLES:
            samples = np.concatenate([samples, np.zeros(MIN_RECORD_SAMPLES - samples.size)])
        records.append(Record(samples=samples, start=start, keep=pre, length=end - start))
        start = end
    return Plan(records=tuple(records), batch=batch, n=n, settle=settle)


def ramp_levels(start_A: float, stop_A: float, max_step_A: float) -> np.ndarray:
    """Current levels from ``start_A`` (excluded) to ``stop_A`` (included), equally spaced, no
    step larger than ``max_step_A``; ``max_step_A = 0`` means one step."""
    if max_step_A <= 0 or start_A == stop_A:
        return np.array([stop_A])
    steps = max(1, math.ceil(abs(stop_A - start_A) / max_step_A - 1e-9))
    return np.linspace(start_A, stop_A, steps + 1)[1:]


def average_onto_grid(values: np.ndarray, t0_s: float, dt_scope_s: float, delay_s: float,
                      dt_s: float, n: int) -> np.ndarray:
    """Mean of the scope samples inside each drive sample interval.

    Scope sample ``k`` is at ``t0_s + k dt_scope_s`` after the trigger; drive sample ``j`` reaches
    the scope during ``[delay_s + j dt_s, delay_s + (j + 1) dt_s)``. Averaging (rather than
    picking one sample) uses every acquired sample, which beats the scope's noise and
    quantisation down by sqrt(samples per interval).
    """
    ratio = dt_s / dt_scope_s
    skip = (delay_s - t0_s) / dt_scope_s
    k, first = int(round(ratio)), int(round(skip))
    if (abs(ratio - k) < 1e-6 and abs(skip - first) < 1e-6 and k >= 1 and first >= 0
            and first + n * k <= values.size):
        # the common case: whole scope points per drive sample, aligned -> a reshape
        return values[first:first + n * k].reshape(n, k).mean(axis=1)
    t = t0_s + dt_scope_s * np.arange(values.size)
    # a small tolerance so a scope sample that lands on an interval edge goes to the later one
    index = np.floor((t - delay_s) / dt_s + 1e-6).astype(np.int64)
    inside = (index >= 0) & (index < n)
    counts = np.bincount(index[inside], minlength=n)
    if counts.size > n or np.any(counts[:n] == 0):
        missing = int(np.sum(counts[:n] == 0))
        raise InstrumentError(
            f"the scope record does not cover {missing} of {n} drive samples (record starts "
            f"{t0_s:.4g} s after the trigger, {values.size} points at {dt_scope_s:.4g} s, delay "
            f"{delay_s:.4g} s); check the scope sample rate and [calibration] delay_s"
        )
    sums = np.bincount(index[inside], weights=values[inside], minlength=n)
    return sums / counts


# --- the Device --------------------------------------------------------------------------
class Bench(Device):
    """AWG + scope (+ Keithley 2400 bias source) described by a :class:`Station`.

    Build it with :func:`open_bench`; the instruments are passed in so tests (and other
    stations) can supply their own. ``cleanup`` callbacks run last in :meth:`close` (adapters,
    emulator threads).
    """

    def __init__(self, station: Station, awg: Any, scope: Any, source: Any = None, *,
                 cleanup: tuple[Callable[[], None], ...] = (), model: Device | None = None,
                 lab: Any = None) -> None:
        default = {}
        if source is not None:
            self.condition_names = ("bias_A",)
            default["bias_A"] = station.source.default_bias_A if station.source else 0.0
        else:
            self.condition_names = ()
        super().__init__(limits=station.limits, default_conditions=default)
        self.station = station
        self.awg = awg
        self.scope = scope
        self.source = source
        #: the device model and the EmulatedLab behind an emulated station (None on hardware)
        self.model = model
        self.lab = lab
        self._cleanup = cleanup
        self._bias_A: float | None = None
        self._closed = False
        #: wall time of the last respond call by stage (seconds), and its number of AWG records
        self.last_timing: dict[str, float] = {}
        self._identity = self._read_identity()
        self._configure()
        # outputs off even if a script forgets close(); a weak reference keeps the bench collectable
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # --- setup -----------------------------------------------------------------------------
    def _read_identity(self) -> dict[str, str]:
        ids = {"awg": self.awg.id, "scope": self.scope.id}
        if self.source is not None:
            ids["source"] = self.source.id
        return ids

    def _configure(self) -> None:
        """Put every instrument in a known, safe state: outputs off, load and bias-source mode
        set (the scope trigger is set with every capture)."""
        st = self.station
        self.awg.output_enabled = False
        self.awg.output_load_ohm = st.awg.load
        if self.source is not None:
            self.source.source_enabled = False
            self.source.source_mode = "current"
            self.source.compliance_voltage = st.source.compliance_V
            self.source.source_current = 0.0
            self._source_errors("configuring the bias source")

    @property
    def memory_samples(self) -> int:
        """Longest AWG record: the station override, else what the AWG reports."""
        override = self.station.awg.memory_samples
        return int(override) if override else int(self.awg.memory_samples)

    def max_record(self, dt_s: float) -> int:
        """Longest record (samples at ``dt_s``) that fits the AWG and the scope memory."""
        rate = self.scope_rate(dt_s)
        margin_s = self.station.calibration.delay_s + 2 * dt_s
        scope_limit = int((self.station.scope.max_points / rate - margin_s) / dt_s)
        return max(1, min(self.memory_samples, scope_limit))

    def scope_rate(self, dt_s: float) -> float:
        """Scope sample rate for a drive at ``dt_s``: the slowest rate the scope offers with at
        least ``oversample`` points per drive sample, capped at ``max_sample_rate_Hz`` (at least
        one point per drive sample is required)."""
        from spinlab.instruments.keysight_scope import SAMPLE_RATES_Hz

        sc = self.station.scope
        offered = sorted(r for r in SAMPLE_RATES_Hz if r <= sc.max_sample_rate_Hz * (1 + 1e-12))
        want = sc.oversample / dt_s
        faster = [r for r in offered if r >= want * (1 - 1e-9)]
        rate = faster[0] if faster else (offered[-1] if offered else 0.0)
        if rate * dt_s < 1 - 1e-9:
            raise ConfigError(
                f"drive sample interval {dt_s:.4g} s is shorter than the scope can resolve "
                f"(max {sc.max_sample_rate_Hz:.4g} Sa/s); use a longer dt_s. Nothing was sent"
            )
        return rate

    # --- Device API ------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        out = super().identity()
        out["instruments"] = dict(self._identity)
        out["station"] = self.station.as_dict()
        if self.model is not None:
            out["model"] = self.model.identity()
        if self.lab is not None and hasattr(self.lab, "identity"):
            out["emulator"] = self.lab.identity()
        return out

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        if self._closed:
            raise InstrumentError("the bench is closed; open it again with open_bench()")
        awg_V = self._check_derived(drive, dt_s, conditions)
        bias = conditions.get("bias_A")
        groups = [(None, np.arange(drive.shape[0]))] if bias is None else [
            (float(b), np.flatnonzero(bias == b)) for b in np.unique(bias)]
        out = np.empty_like(drive)
        timing = dict.fromkeys(("upload_s", "capture_s", "read_s", "align_s", "records"), 0.0)
        try:
            for bias_A, rows in groups:
                if bias_A is not None:
                    self._set_bias(bias_A)
                plan = plan_records(awg_V[rows], settle=self._samples(self.station.segmentation.settle_s, dt_s),
                                    overlap=self._samples(self.station.segmentation.overlap_s, dt_s),
                                    max_record=self.max_record(dt_s))
                timeline = np.empty(plan.timeline_length)
                timing["records"] += len(plan.records)
                for record in plan.records:
                    response = self._play(record.samples, dt_s, timing)
                    timeline[record.start:record.start + record.length] = \
                        response[record.keep:record.keep + record.length]
                out[rows] = plan.unpack(timeline)
        except BaseException:
            self.outputs_off()
            raise
        finally:
            self.last_timing = timing
        return out * self.station.calibration.response_gain

    # --- one record ------------------------------------------------------------------------
    def _play(self, samples_V: np.ndarray, dt_s: float, timing: dict[str, float]) -> np.ndarray:
        """Upload, arm, trigger, capture and grid one AWG record; AWG output off afterwards."""
        st = self.station
        n = samples_V.size
        t = time.perf_counter()
        self.awg.output_enabled = False
        self.awg.upload_arb(ARB_NAME, samples_V, 1.0 / dt_s)
        self.awg.arm_burst(cycles=1, source="BUS")
        timing["upload_s"] += time.perf_counter() - t
        rate = self.scope_rate(dt_s)
        duration_s = n * dt_s + st.calibration.delay_s + 2 * dt_s
        t = time.perf_counter()
        try:
            self.scope.configure_capture(st.wiring.scope_channel, duration_s=duration_s,
                                         sample_rate_Hz=rate, full_scale_V=st.scope.full_scale_V,
                                         offset_V=st.scope.offset_V,
                                         trigger_level_V=st.wiring.scope_trigger_level_V,
                                         impedance="FIFT" if st.scope.impedance_ohm == 50 else "ONEM")
            self.awg.output_enabled = True
            self.scope.arm_single()
            self._wait_armed(st.scope.timeout_s)
            self.awg.trigger()
            self.awg.raise_errors("the bus trigger")
            self.scope.wait_acquired(st.scope.timeout_s + duration_s)
        finally:
            self.awg.output_enabled = False
        timing["capture_s"] += time.perf_counter() - t
        t = time.perf_counter()
        wave = self.scope.read_waveform(st.wiring.scope_channel)
        timing["read_s"] += time.perf_counter() - t
        t = time.perf_counter()
        values = np.asarray(wave.samples, dtype=np.float64).reshape(-1)
        gridded = average_onto_grid(values, wave.t0_s, wave.dt_s, st.calibration.delay_s, dt_s, n)
        timing["align_s"] += time.perf_counter() - t
        return gridded

    def _wait_armed(self, timeout_s: float) -> None:
        """Block until the scope waits for its trigger (``:OPERegister:CONDition?`` bit 5): a
        real scope needs a moment after ``:SINGle``, and a trigger sent before would be lost."""
        deadline = time.monotonic() + timeout_s
        delay = 1e-4
        while not self.scope.operation_condition & WAIT_TRIGGER_BIT:
            if time.monotonic() > deadline:
                raise InstrumentError(f"the scope did not arm within {timeout_s:g} s after :SINGle")
            time.sleep(delay)
            delay = min(2 * delay, 0.02)

    # --- checks and outputs ----------------------------------------------------------------
    def _check_derived(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """Checks on what the instruments would be told (after calibration); nothing sent yet."""
        st = self.station
        awg_V = drive / st.calibration.device_V_per_awg_V
        peak = float(np.max(np.abs(awg_V))) if awg_V.size else 0.0
        if not math.isfinite(peak) or peak > st.awg.max_output_V:
            raise SafetyLimitError(
                f"the drive needs {peak:.4g} V at the AWG (drive gain "
                f"{st.calibration.device_V_per_awg_V:.4g}), above [awg] max_output_V = "
                f"{st.awg.max_output_V} V; nothing was sent"
            )
        if 1.0 / dt_s > st.awg.max_sample_rate_Hz * (1 + 1e-9):
            raise ConfigError(
                f"drive sample rate {1 / dt_s:.4g} Sa/s exceeds the AWG maximum "
                f"{st.awg.max_sample_rate_Hz:.4g} Sa/s; use a longer dt_s. Nothing was sent"
            )
        self.scope_rate(dt_s)
        bias = conditions.get("bias_A")
        if bias is not None and float(np.max(np.abs(bias))) > self.limits.max_bias_A * (1 + 1e-12):
            raise SafetyLimitError(f"bias {float(np.max(np.abs(bias))):.4g} A exceeds max_bias_A = "
                                   f"{self.limits.max_bias_A:.4g} A; nothing was sent")
        return awg_V

    def _set_bias(self, bias_A: float) -> None:
        if abs(bias_A) > self.limits.max_bias_A * (1 + 1e-12):  # re-checked where it is sent
            raise SafetyLimitError(f"bias {bias_A:.4g} A exceeds max_bias_A = {self.limits.max_bias_A:.4g} A")
        if self._bias_A == bias_A:
            return
        if self._bias_A is None:
            self.source.source_current = 0.0
            self.source.source_enabled = True
            self._bias_A = 0.0
        self._ramp_bias(self._bias_A, bias_A)
        self._source_errors(f"setting the bias to {bias_A:.4g} A")
        self._bias_A = bias_A

    def _ramp_bias(self, start_A: float, stop_A: float) -> None:
        """Move the source current in the station's ramp steps (one step when it sets none)."""
        settings = self.station.source
        for level in ramp_levels(start_A, stop_A, settings.ramp_step_A):
            self.source.source_current = level
            if settings.ramp_pause_s:
                time.sleep(settings.ramp_pause_s)

    def _source_errors(self, context: str) -> None:
        """pymeasure's Keithley2400.check_errors only logs; a bias error must stop the run."""
        errors = self.source.check_errors()
        if errors:
            raise InstrumentError(f"the bias source reported {errors} after {context}; check the bias "
                                  "source and the station's [source] settings (compliance_V, bias range)")

    def outputs_off(self) -> None:
        """Switch the AWG output and the bias source off and read both states back (a query
        also guarantees the instrument has executed the writes); keep going if one fails."""
        for name, action in (("AWG output", self._awg_off), ("bias source", self._source_off)):
            try:
                action()
            except Exception:  # the other output must still go off
                log.exception("could not switch the %s off", name)

    def _awg_off(self) -> None:
        self.awg.output_enabled = False
        if self.awg.output_enabled:
            raise InstrumentError("the AWG output still reports ON after OUTP OFF")

    def _source_off(self) -> None:
        bias_A, self._bias_A = self._bias_A, None
        if self.source is not None:
            if bias_A:
                self._ramp_bias(bias_A, 0.0)
            self.source.source_current = 0.0
            self.source.source_enabled = False
            if self.source.source_enabled:
                raise InstrumentError("the bias source output still reports ON after OUTP OFF")

    def close(self) -> None:
        """Outputs off, then close every instrument connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        self.outputs_off()
        for inst in (self.awg, self.scope, self.source):
            if inst is None:
                continue
            try:
                inst.adapter.close()
            except Exception:
                log.exception("could not close %s", getattr(inst, "name", inst))
        for callback in self._cleanup:
            try:
                callback()
            except Exception:
                log.exception("bench cleanup failed")

    @staticmethod
    def _samples(duration_s: float, dt_s: float) -> int:
        return int(math.ceil(duration_s / dt_s - 1e-9))


def _close_at_exit(ref: "weakref.ref[Bench]") -> None:
    bench = ref()
    if bench is not None:
        bench.close()


# --- opening -----------------------------------------------------------------------------
def open_bench(target: str, *, device: str = "sim:vortex", seed: int | str = 0, **options: Any) -> Bench:
    """Open a bench: ``"emulated"`` (built-in emulated station around ``device``) or the path
    of a station file. A station whose ``visa_library`` is ``"emulated"`` also gets an
    :class:`~sim_backends.emulated.EmulatedLab` around ``device``; any other opens real
    instruments through pyvisa. ``seed`` seeds the emulated instruments' noise and, for a
    ``sim:`` model whose address does not set one, the model's noise.
    """
    if options:
        raise ConfigError(f"unknown bench option(s) {sorted(options)}; a bench accepts 'device' "
                          "(emulated stations) and 'seed'")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"bench option seed must be an integer, got {seed!r}") from None
    path = builtin_station("emulated") if target == "emulated" else Path(target)
    station = load_station(path)
    if station.wiring.awg_channel != 1:
        raise ConfigError(f"{station.path}: [wiring] awg_channel = {station.wiring.awg_channel}, but the "
                          "Keysight33500B driver drives channel 1 only; cable the device to channel 1")
    if station.emulated:
        return _open_emulated(station, device, seed)
    return _open_hardware(station)


def _open_emulated(station: Station, device: str, seed: int) -> Bench:
    from spinlab.registry import open_device, parse_address
    from spinlab.sim_backends.emulated import EmulatedLab

    if parse_address(device)[0] == "bench":
        raise ConfigError(f"the emulated bench needs a device model (sim:..., twin:...), got {device!r}")
    # one seed for the whole emulated bench: instrument noise and (unless given) the model's noise
    model = open_device(device, defaults={"seed": seed})
    try:
        lab = EmulatedLab(model, seed=seed)
    except BaseException:
        model.close()
        raise
    cleanup = [model.close]
    if hasattr(lab, "close"):
        cleanup.insert(0, lab.close)
    return _connect(station, lab.visa_library(), model=model, lab=lab, cleanup=tuple(cleanup))


def _open_hardware(station: Station) -> Bench:
    return _connect(station, station.resources.visa_library)


def _connect(station: Station, visa_library: Any, *, model: Device | None = None, lab: Any = None,
             cleanup: tuple[Callable[[], None], ...] = ()) -> Bench:
    """Open the station's instruments (each driver builds its own VISA adapter, with its
    terminations) and the Bench; on any failure close whatever was opened."""
    from pymeasure.instruments.keithley import Keithley2400

    from spinlab.instruments.keysight_awg import Keysight33500B
    from spinlab.instruments.keysight_scope import InfiniiVisionScope

    res = station.resources
    timeout_ms = int(res.timeout_s * 1000)
    opened: list[Any] = []

    def instrument(cls: type, resource: str, role: str, **kwargs: Any) -> Any:
        try:
            inst = cls(resource, visa_library=visa_library, timeout=timeout_ms, **kwargs)
            opened.append(inst)
            inst.id  # noqa: B018 - fail here, naming the resource, if nothing answers
        except Exception as exc:
            raise InstrumentError(f"cannot reach the {role} at {resource} (station {station.path}): "
                                  f"{type(exc).__name__}: {exc}") from exc
        return inst

    try:
        awg = instrument(Keysight33500B, res.awg, "AWG")
        scope = instrument(InfiniiVisionScope, res.scope, "oscilloscope")
        # pymeasure's Keithley2400 sets no terminations; the 2400 ends replies with LF, which a
        # raw-socket (GPIB-LAN bridge) session needs to know
        source = instrument(Keithley2400, res.source, "bias source", read_termination="\n",
                            write_termination="\n") if res.source else None
        return Bench(station, awg, scope, source, cleanup=cleanup, model=model, lab=lab)
    except BaseException:
        for inst in opened:
            try:
                inst.adapter.close()
            except Exception:
                log.exception("could not close %s", inst.name)
        for callback in cleanup:
            callback()
        raise
