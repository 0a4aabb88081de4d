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
A source found on when a bench opens (a crashed or killed run) is ramped down from where it is.

Threads (why a lock and a stop check): a plan may drive the bench from a worker thread (an
acquisition feeding a trainer) while the run's thread switches the outputs off. One lock makes
``respond``, ``outputs_off`` and ``close`` whole to each other (the bias is bench state), and a
worker asked to stop (:func:`~spinlab.engine.signals.check_stop`) ends before its next record,
so outputs-off waits at most one record and nothing is played after it.

Faults (why the bench, not the Device API, retries): the bench knows its records, so it can
re-run exactly the one that failed; a caller of ``respond`` sees a response or one
:class:`~spinlab.errors.InstrumentFaultError`, never half a record.

This module is the Device with its retries; the pieces it stands on have their own modules:
:mod:`.record_layout` (where each sample goes), :mod:`.output_safety` (limits, bias ramps,
outputs off) and :mod:`.opening` (a station file -> an open Bench).
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from spinlab.device import Device, note_measurement
from spinlab.engine.signals import check_stop, shield
from spinlab.errors import ConfigError, InstrumentError, InstrumentFaultError
from spinlab.instruments.field import FieldController, FieldReading
from spinlab.instruments.links import Link, StepFailed, one_line
from spinlab.instruments.output_safety import PROBE_TIMEOUT_S, VOLTAGE_RAMP_STEPS, OutputSafety, ramp_levels
from spinlab.instruments.record_layout import (
    MIN_RECORD_SAMPLES,
    Record,
    RecordLayout,
    average_onto_grid,
    plan_records,
)
from spinlab.instruments.roles import AnalyserRole, AwgRole, ScopeRole, SourceRole
from spinlab.instruments.scpi import format_errors, poll_until
from spinlab.instruments.station import Station

log = logging.getLogger("spinlab.bench")

#: The record layout's old name (the engine's ``Plan`` is something else).
Plan = RecordLayout
#: Name of the arbitrary waveform in AWG memory.
ARB_NAME = "SPINLAB"
#: The scope's ADC resolution: samples within one ADC step of the screen edge are clipped.
ADC_BITS = 8
#: A record with this many consecutive clipped samples left the screen (a lone noise sample at
#: the edge does not count).
CLIPPED_RUN = 8


# --- the Device --------------------------------------------------------------------------
class Bench(OutputSafety, Device):
    """AWG + scope (+ Keithley 2400 bias source) described by a :class:`Station`.

    Build it with :func:`open_bench`. ``links`` hold the instruments (``"awg"``, ``"scope"``,
    optionally ``"source"``) and know how to reopen them; ``locks`` (held while the bench is
    open) keep other processes off the station; ``cleanup`` callbacks run last in
    :meth:`close` (emulator threads, the model).

    On opening, before anything is configured, the bench clears stale entries from every error
    queue (logged) and reads back the outputs: an AWG output that is on is switched off, a bias
    source that is on is ramped down from where it is, in the station's steps.

    Every AWG record is recorded whole or not at all: after the capture the bench checks the
    upload (point count and checksum), the scope record (points, time base, nothing left in the
    reply stream, no stretch beyond the screen) and that AWG and source still hold the state it
    set (a reset shows there). On an instrument fault the record is re-run, up to
    ``[resources] retries`` times with back-off, after reconnecting the instrument, clearing its
    error queue and re-applying its state; an instrument that does not answer after reconnecting
    is reported at once. What could not be recovered raises one
    :class:`~spinlab.errors.InstrumentFaultError`, outputs off.
    """

    def __init__(
        self,
        station: Station,
        links: dict[str, Link],
        *,
        cleanup: tuple[Callable[[], None], ...] = (),
        model: Device | None = None,
        lab: Any = None,
        locks: Any = None,
        drivers: dict[str, str] | None = None,
    ) -> None:
        default = {}
        names: tuple[str, ...] = ()
        if "source" in links:
            names += ("bias_A",)
            default["bias_A"] = station.source.default_bias_A if station.source else 0.0
        #: the closed-loop field (None: the station has no magnet); ``field_T`` defaults to the
        #: park field, where the magnet already is (a call that names no field moves nothing)
        self.field: FieldController | None = None
        if "magnet" in links and station.magnet is not None:
            names += ("field_T",)
            default["field_T"] = station.magnet.park_field_T
            self.field = FieldController(
                station.magnet,
                links["magnet"],
                links["gaussmeter"],
                path=station.path,
                max_field_T=station.limits.max_field_T,
            )
        self.condition_names = names
        super().__init__(limits=station.limits, default_conditions=default)
        self.station = station
        self.links = links
        #: the device model and the EmulatedLab behind an emulated station (None on hardware)
        self.model = model
        self.lab = lab
        #: the station's ResourceLocks (None for in-process emulated instruments)
        self.locks = locks
        #: the per-record checks; switch off only to measure what they cost
        self.checks = True
        #: one entry per failed attempt: what, instrument, step, error, outcome (retried / reported)
        self.fault_log: list[dict[str, str]] = []
        #: every field set closed-loop: set point, mean gaussmeter reading, current, corrections
        self.field_log: list[FieldReading] = []
        self._cleanup = cleanup
        self._bias_A: float | None = None  # what the source is believed to source; None: off
        self._closed = False
        self._lock = threading.RLock()  # one caller at a time drives the instruments
        self._field_measured: np.ndarray | None = None  # per drive, in the call in progress
        #: wall time of the last respond call by stage (seconds), its AWG records and retries
        self.last_timing: dict[str, float] = {}
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        self._identity = {key: link.idn for key, link in links.items()}
        #: the registered driver of each role (``spinlab.drivers``)
        self.drivers = dict(drivers or {})
        try:
            self._attempts("opening the station", self._open_station)
        except InstrumentFaultError as exc:
            report = self._with_outputs(exc)
            self.close()
            raise report from exc.__cause__
        except BaseException:
            self.close()
            raise
        # outputs off even if a script forgets close(); a weak reference keeps the bench collectable
        atexit.register(self._atexit)

    @property
    def awg(self) -> AwgRole:
        return self.links["awg"].driver

    @property
    def scope(self) -> ScopeRole:
        return self.links["scope"].driver

    @property
    def source(self) -> SourceRole | None:
        link = self.links.get("source")
        return None if link is None else link.driver

    @property
    def analyser(self) -> AnalyserRole | None:
        link = self.links.get("analyser")
        return None if link is None else link.driver

    # --- setup -----------------------------------------------------------------------------
    def _open_station(self) -> None:
        """Stale errors cleared, outputs read back and switched off (the bias ramped), then
        every instrument put in a known state."""
        for link in self.links.values():
            self._clear_errors(link, "when the station opened")
        with self.links["awg"].step("reading back its output") as awg:
            if awg.output_enabled:
                log.warning("the AWG output was on when the station opened; switching it off")
                awg.output_enabled = False
        self._source_off()
        if self.field is not None:
            self.field.open()  # a supply left on (a killed run) ramps to park from where it is
        self._configure()

    def _clear_errors(self, link: Link, when: str) -> None:
        """Drain ``link``'s error queue, logging what was there (it is not this run's doing)."""
        with link.step("clearing its error queue") as inst:
            stale = inst.clear_errors()
        if stale:
            log.warning(
                "cleared %d stale error(s) from the %s's queue %s: %s",
                len(stale),
                link.role,
                when,
                format_errors(stale),
            )

    def _configure(self) -> None:
        """Put every instrument in a known, safe state: outputs off, load and bias-source mode
        set (the scope is set up with every capture)."""
        st = self.station
        link = self.links["awg"]
        with link.step("configuring its output") as awg:
            awg.output_enabled = False
            awg.output_load_ohm = st.awg.load
            family = awg.capabilities.family
        if family != st.awg.model:
            raise ConfigError(
                f"{st.path}: [awg] model = {st.awg.model!r}, but the AWG at {link.resource} "
                f"is a {family}-series generator ({self._identity['awg']}); fix [awg] model"
            )
        if "source" in self.links:
            self._configure_source()

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
        sc = self.station.scope
        offered = sorted(r for r in self.scope.SAMPLE_RATES_Hz if r <= sc.max_sample_rate_Hz * (1 + 1e-12))
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
        out["drivers"] = dict(self.drivers)
        out["station"] = self.station.as_dict()
        if self.model is not None:
            out["model"] = self.model.identity()
        if self.lab is not None and hasattr(self.lab, "identity"):
            out["emulator"] = self.lab.identity()
        return out

    def _measured_conditions(self) -> dict[str, Any]:
        """``field_T_measured``: the gaussmeter's mean reading when each drive's field was set."""
        measured = self._field_measured
        if measured is None:
            return {}
        return {
            "field_T_measured": float(measured[0]) if np.all(measured == measured[0]) else measured.tolist()
        }

    def resolve_conditions(self, conditions: Any, batch: int) -> dict[str, np.ndarray]:
        """The Device's checks, then the field against the station's limits (one line naming
        the key and the station file, before anything moves)."""
        resolved = super().resolve_conditions(conditions, batch)
        if self.field is not None and "field_T" in resolved:
            for value in np.unique(resolved["field_T"]):
                self.field.check(float(value))
        return resolved

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            return self._respond_locked(drive, dt_s, conditions)

    def _respond_locked(
        self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]
    ) -> np.ndarray:
        if self._closed:
            raise InstrumentError("the bench is closed; open it again with open_bench()")
        self._field_measured = None
        awg_V = self._check_derived(drive, dt_s, conditions)
        present_T = None if self.field is None else self.field.field_T
        groups = _condition_groups(
            drive.shape[0], conditions.get("field_T"), conditions.get("bias_A"), present_T
        )
        out = np.empty_like(drive)
        timing = dict.fromkeys(("upload_s", "capture_s", "read_s", "align_s", "records", "retries"), 0.0)
        logged = len(self.fault_log)
        try:
            for (field_T, bias_A), rows in groups:
                segmentation = self.station.segmentation
                layout = plan_records(
                    awg_V[rows],
                    settle=self._samples(segmentation.settle_s, dt_s),
                    overlap=self._samples(segmentation.overlap_s, dt_s),
                    max_record=self.max_record(dt_s),
                )
                timeline = np.empty(layout.timeline_length)
                timing["records"] += len(layout.records)
                for number, record in enumerate(layout.records, 1):
                    check_stop()  # a worker asked to stop plays no further record
                    what = (
                        f"record {number} of {len(layout.records)}"
                        + ("" if bias_A is None else f" at {bias_A:.4g} A")
                        + ("" if field_T is None else f" at {field_T:.4g} T")
                    )
                    response = self._attempts(
                        what, functools.partial(self._play, record.samples, dt_s, timing, bias_A, field_T)
                    )
                    timeline[record.start : record.start + record.length] = response[
                        record.keep : record.keep + record.length
                    ]
                out[rows] = layout.unpack(timeline)
                if field_T is not None:
                    if self._field_measured is None:
                        self._field_measured = np.full(drive.shape[0], np.nan)
                    self._field_measured[rows] = self.field_log[-1].measured_T
        except InstrumentFaultError as exc:
            raise self._with_outputs(exc) from exc.__cause__
        except BaseException:
            with shield():  # a second Ctrl-C must not cut the bias ramp short
                self.outputs_off()
            raise
        finally:
            timing["retries"] = sum(entry["outcome"] == "retried" for entry in self.fault_log[logged:])
            self.last_timing = timing
        return out * self.station.calibration.response_gain

    # --- the spectrum (a station with an analyser) --------------------------------------------
    def spectrum(self, conditions: Mapping[str, float] | None, freqs_Hz: Any) -> np.ndarray:
        """The device's one-sided power spectral density (W/Hz, at the device) at DC operating
        ``conditions`` on the uniform grid ``freqs_Hz``: one averaged analyser trace over the
        grid (RBW ``rbw_per_bin`` bins), its power in the RBW divided by the RBW filter's noise
        bandwidth and by the RF chain's gain. Retried and made safe like a record."""
        with self._lock:
            if self._closed:
                raise InstrumentError("the bench is closed; open it again with open_bench()")
            if "analyser" not in self.links:
                raise ConfigError(
                    f"{self.station.path}: no spectrum analyser (give [resources] analyser) to measure "
                    "a spectrum with"
                )
            freqs = np.asarray(freqs_Hz, dtype=float)
            step = np.diff(freqs)
            if freqs.ndim != 1 or freqs.size < 2 or not np.all(step > 0) or np.ptp(step) > 1e-6 * step[0]:
                raise ConfigError("spectrum frequencies must be a uniform, increasing grid of >= 2 points")
            cond = self.resolve_conditions(conditions, 1)
            self.limits.check_conditions(cond)
            bias, field = cond.get("bias_A"), cond.get("field_T") if self.field is not None else None
            bias_A = None if bias is None else float(np.ravel(bias)[0])
            field_T = None if field is None else float(np.ravel(field)[0])
            what = (
                "a spectrum"
                + ("" if bias_A is None else f" at {bias_A:.4g} A")
                + ("" if field_T is None else f" at {field_T:.4g} T")
            )
            try:
                psd = self._attempts(what, functools.partial(self._sweep_analyser, freqs, bias_A, field_T))
            except InstrumentFaultError as exc:
                raise self._with_outputs(exc) from exc.__cause__
            except BaseException:
                with shield():  # a second Ctrl-C must not cut the bias ramp short
                    self.outputs_off()
                raise
            if field_T is not None:
                note_measurement(
                    {"bias_A": bias_A, "field_T": field_T, "field_T_measured": self.field_log[-1].measured_T}
                )
            return psd

    def _sweep_analyser(
        self, freqs: np.ndarray, bias_A: float | None, field_T: float | None = None
    ) -> np.ndarray:
        st = self.station.analyser
        assert st is not None
        if field_T is not None:  # the field first, as for a record: then the bias
            self._set_field(field_T)
        if bias_A is not None:
            self._set_bias(bias_A)
        caps = st.capabilities
        span = float(freqs[-1] - freqs[0])
        low, high = caps.rbw_range_Hz
        rbw = min(max(st.rbw_per_bin * span / (freqs.size - 1), low), high)
        link = self.links["analyser"]
        with link.step("configuring the sweep") as analyser:
            wanted = analyser.configure(
                float(freqs.mean()),
                span,
                rbw,
                points=int(freqs.size),
                reference_level_dBm=st.reference_level_dBm,
                averages=st.averages,
            )
        with link.step("sweeping") as analyser:
            trace = analyser.measure()
            got = trace.meta.get("settings", wanted)
            if got != wanted:  # a reset between configure and sweep shows here
                raise InstrumentError(
                    f"the analyser swept {got}, not the {wanted} configured (was it reset?)"
                )
        if self.checks and bias_A is not None:
            self._check_bias(bias_A)
        power_W = 1e-3 * 10 ** (np.asarray(trace.power_dBm, dtype=float) / 10)
        psd = power_W / (caps.noise_bandwidth_per_rbw * trace.rbw_Hz) / 10 ** (st.chain_gain_dB / 10)
        return np.interp(freqs, trace.frequency_Hz, psd)

    # --- retries ---------------------------------------------------------------------------
    def _attempts(self, what: str, action: Callable[[], Any]) -> Any:
        """``action()``, re-run after an instrument fault once the failed instrument is
        reconnected and restored, with back-off; an instrument may fail ``[resources] retries``
        times per action before the bench gives up (independent faults of different
        instruments do not add up; the number of attempts stays bounded)."""
        res = self.station.resources
        failures: dict[str, int] = {}
        failed: Link | None = None
        while True:
            try:
                if failed is not None:
                    self._recover(failed)
                return action()
            except StepFailed as fault:
                link = fault.link
                count = failures[link.key] = failures.get(link.key, 0) + 1
                give_up = not link.answering or count > res.retries
                self.fault_log.append(
                    {
                        "what": what,
                        "instrument": link.role,
                        "step": fault.step,
                        "error": one_line(fault.cause),
                        "outcome": "reported" if give_up else "retried",
                    }
                )
                if give_up:
                    raise self._gave_up(what, fault, count) from fault.cause
                log.warning(
                    "%s failed %s (%s): %s; retrying (%d of %d)",
                    link.role,
                    fault.step,
                    what,
                    one_line(fault.cause),
                    count,
                    res.retries,
                )
                time.sleep(res.retry_backoff_s * 3 ** (count - 1))
                failed = link

    def _recover(self, link: Link) -> None:
        """A fresh connection (stale replies and half-read blocks go with the old one), an empty
        error queue, and the state the bench had set (a reset loses it)."""
        link.reconnect(min(link.timeout_s, PROBE_TIMEOUT_S))
        self._clear_errors(link, "after the fault")
        if link.key == "awg":
            with link.step("restoring its settings") as awg:
                awg.output_enabled = False
                awg.output_load_ohm = self.station.awg.load
        elif link.key == "source":
            self._resync_source()
        elif link.key == "magnet" and self.field is not None:
            self.field.resync()

    def _gave_up(self, what: str, fault: StepFailed, attempts: int) -> InstrumentFaultError:
        link = fault.link
        if not link.answering:
            return InstrumentFaultError(
                f"the {link.role} at {link.resource} stopped answering ({what}, {fault.step}: "
                f"{one_line(fault.cause)}) and did not answer *IDN? after reconnecting; check that it is "
                f"on and connected, and [resources] timeout_s = {link.timeout_s:g} s"
            )
        hint = (
            ""
            if isinstance(fault.cause, InstrumentError)
            else ("; check that it is on, connected and used by nobody else")
        )
        return InstrumentFaultError(
            f"the {link.role} at {link.resource} failed {attempts} time(s) {fault.step} ({what}): "
            f"{one_line(fault.cause)}{hint}"
        )

    def _with_outputs(self, exc: InstrumentFaultError) -> InstrumentFaultError:
        """Switch the outputs off and say in the error whether that could be confirmed."""
        with shield():
            left = self.outputs_off()
        if not left:
            return InstrumentFaultError(f"{exc}; outputs are off")
        return InstrumentFaultError(
            f"{exc}; the {' and the '.join(left)} could not be confirmed off: "
            f"switch {'it' if len(left) == 1 else 'them'} off by hand"
        )

    # --- one record ------------------------------------------------------------------------
    def _play(
        self,
        samples_V: np.ndarray,
        dt_s: float,
        timing: dict[str, float],
        bias_A: float | None,
        field_T: float | None = None,
    ) -> np.ndarray:
        """Field, bias, upload, arm, trigger, capture, check and grid one AWG record; AWG output
        off afterwards. Returns only a record that passed every check."""
        st = self.station
        awg_link, scope_link = self.links["awg"], self.links["scope"]
        if field_T is not None:
            self._set_field(field_T)
        if bias_A is not None:
            self._set_bias(bias_A)
        n = samples_V.size
        t = time.perf_counter()
        with awg_link.step("uploading the record") as awg:
            awg.output_enabled = False
            awg.upload_arb(ARB_NAME, samples_V, 1.0 / dt_s, verify=self.checks)
            awg.arm_burst(cycles=1, source="BUS")
        timing["upload_s"] += time.perf_counter() - t
        rate = self.scope_rate(dt_s)
        duration_s = n * dt_s + st.calibration.delay_s + 2 * dt_s
        t = time.perf_counter()
        try:
            with scope_link.step("configuring the capture") as scope:
                capture = scope.configure_capture(
                    st.wiring.scope_channel,
                    duration_s=duration_s,
                    sample_rate_Hz=rate,
                    full_scale_V=st.scope.full_scale_V,
                    offset_V=st.scope.offset_V,
                    trigger_level_V=st.wiring.scope_trigger_level_V,
                    impedance="FIFT" if st.scope.impedance_ohm == 50 else "ONEM",
                )
            with awg_link.step("switching its output on") as awg:
                awg.output_enabled = True
            with scope_link.step("arming") as scope:
                scope.arm_single()
                self._wait_armed(scope, st.scope.timeout_s)
            with awg_link.step("triggering the record") as awg:
                awg.trigger()
                awg.raise_errors("the bus trigger")
            with scope_link.step("waiting for the acquisition") as scope:
                scope.wait_acquired(st.scope.timeout_s + duration_s)
        finally:
            with awg_link.step("switching its output off after the capture") as awg:
                awg.output_enabled = False
        timing["capture_s"] += time.perf_counter() - t
        t = time.perf_counter()
        with scope_link.step("reading the waveform") as scope:
            wave = scope.read_waveform(st.wiring.scope_channel)
            if self.checks:
                scope.check_in_step("the waveform transfer")
        timing["read_s"] += time.perf_counter() - t
        values = np.asarray(wave.samples, dtype=np.float64).reshape(-1)
        if self.checks:
            with scope_link.step("checking the record"):
                self._check_record(wave, values, capture)
            self._check_state(bias_A)
            self._check_field()
        t = time.perf_counter()
        gridded = average_onto_grid(values, wave.t0_s, wave.dt_s, st.calibration.delay_s, dt_s, n)
        timing["align_s"] += time.perf_counter() - t
        return gridded

    def _wait_armed(self, scope: ScopeRole, timeout_s: float) -> None:
        """Block until the scope waits for its trigger: a trigger sent before would be lost. A
        scope that stopped meanwhile (a reset, a stray trigger) fails at once."""
        poll_until(scope.waiting_for_trigger, timeout_s, "the scope did not arm after :SINGle")

    def _check_record(self, wave: Any, values: np.ndarray, capture: dict[str, float]) -> None:
        """The record is the capture that was configured, finite, and on the screen."""
        sc = self.station.scope
        rate = capture["sample_rate_Hz"]
        # a real scope's origin may carry a sub-sample trigger-interpolation offset; a reset one is
        # off by a whole screen
        if (
            wave.n != capture["points"]
            or not math.isclose(wave.dt_s * rate, 1.0, rel_tol=1e-6)
            or abs(wave.t0_s - capture["start_s"]) > 2.0 / rate
        ):
            raise InstrumentError(
                f"the scope returned {wave.n} points at {1 / wave.dt_s:.6g} Sa/s from {wave.t0_s:.4g} s, "
                f"not the {capture['points']} at {rate:.6g} Sa/s from {capture['start_s']:.4g} s "
                "configured (was it reset?)"
            )
        if not np.all(np.isfinite(values)):
            raise InstrumentError("the scope record holds non-finite values")
        step = sc.full_scale_V / 2**ADC_BITS
        top = sc.offset_V + sc.full_scale_V / 2 - 1.5 * step
        bottom = sc.offset_V - sc.full_scale_V / 2 + 0.5 * step
        run = _longest_run((values >= top) | (values <= bottom))
        if run >= max(CLIPPED_RUN, sc.oversample):
            raise InstrumentError(
                f"the response left the scope screen ({bottom:.4g} .. {top:.4g} V) for {run} consecutive "
                "samples; widen [scope] full_scale_V or move offset_V"
            )

    def _check_state(self, bias_A: float | None) -> None:
        """AWG and bias source still hold what the bench set (a reset would have changed it)."""
        st = self.station
        with self.links["awg"].step("checking what it played") as awg:
            state = awg.playing_state()
            same_load = _same_load(state.load_ohm, st.awg.load)
            if state.function != "ARB" or state.arb.upper() != ARB_NAME or not same_load:
                raise InstrumentError(
                    f"the AWG plays {state.function} {state.arb!r} into {state.load_ohm:g} ohm, "
                    f"not arb {ARB_NAME!r} into {st.awg.load:g} ohm (was it reset?)"
                )
        if bias_A is not None:
            self._check_bias(bias_A)

    def _check_bias(self, bias_A: float) -> None:
        """The bias source is on, sourcing ``bias_A`` (a reset would have changed it)."""
        with self.links["source"].step("checking the bias") as source:
            state = source.output_state()
            # pymeasure programs the level with %g: 6 significant digits
            if not (
                state.on
                and state.function == "CURR"
                and math.isclose(state.current_A, bias_A, rel_tol=1e-5, abs_tol=1e-12)
            ):
                raise InstrumentError(
                    f"the bias source is {'on' if state.on else 'off'}, sourcing {state.function} at "
                    f"{state.current_A:.6g} A instead of {bias_A:.6g} A (was it reset?)"
                )

    def _check_field(self) -> None:
        """The magnet supply still holds the set point of the field that was set (a reset or a
        tripped output shows here)."""
        field = self.field
        if field is None or field.field_T is None or field.parked:
            return
        with self.links["magnet"].step("checking the field") as supply:
            state = supply.output_state()
            if not (
                state.on
                and state.mode == "CURR"
                and math.isclose(state.setpoint_A, field.setpoint_A or 0.0, rel_tol=1e-5, abs_tol=1e-9)
            ):
                raise InstrumentError(
                    f"the magnet supply is {'on' if state.on else 'off'} in {state.mode} mode at "
                    f"{state.setpoint_A:.6g} A instead of {field.setpoint_A:.6g} A for {field.field_T:.4g} T "
                    "(was it reset?)"
                )

    # --- checks and outputs ----------------------------------------------------------------

    def close(self) -> None:
        """Outputs off, then close every instrument connection and release the station
        (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self._atexit)
            self.outputs_off()
            for link in self.links.values():
                link.close()
        for callback in self._cleanup:
            try:
                callback()
            except Exception:
                log.exception("bench cleanup failed")
        if self.locks is not None:
            self.locks.release()

    @staticmethod
    def _samples(duration_s: float, dt_s: float) -> int:
        return int(math.ceil(duration_s / dt_s - 1e-9))


def _condition_groups(
    n: int, field: np.ndarray | None, bias: np.ndarray | None, present_T: float | None = None
) -> list[tuple[tuple[float | None, float | None], np.ndarray]]:
    """The drives of each (field, bias), each field set once per call, swept from the end
    nearest the ``present_T`` field (ascending, or descending when the magnet sits nearer the
    highest): calls over the same fields sweep up and down, one field change fewer per call
    (each costs a ramp and a settle); biases ascending within a field."""
    rows: dict[tuple[float | None, float | None], list[int]] = {}
    for i in range(n):
        key = (None if field is None else float(field[i]), None if bias is None else float(bias[i]))
        rows.setdefault(key, []).append(i)
    order = sorted(rows, key=lambda key: tuple(-math.inf if v is None else v for v in key))
    fields = sorted({key[0] for key in order if key[0] is not None})
    if present_T is not None and fields and abs(fields[-1] - present_T) < abs(present_T - fields[0]):
        order.sort(key=lambda key: -math.inf if key[0] is None else -key[0])  # stable: biases ascending
    return [(key, np.asarray(rows[key])) for key in order]


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in ``mask``."""
    if not mask.any():
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return int(np.max(edges[1::2] - edges[::2]))


def _same_load(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-6)


def _close_at_exit(ref: weakref.ref[Bench]) -> None:
    bench = ref()
    if bench is not None:
        bench.close()


# the entry point (`bench:` addresses) and the other public names of this module's past
from spinlab.instruments.opening import open_bench  # noqa: E402

__all__ = [
    "ADC_BITS",
    "ARB_NAME",
    "Bench",
    "CLIPPED_RUN",
    "MIN_RECORD_SAMPLES",
    "PROBE_TIMEOUT_S",
    "Plan",
    "Record",
    "RecordLayout",
    "VOLTAGE_RAMP_STEPS",
    "average_onto_grid",
    "open_bench",
    "plan_records",
    "ramp_levels",
]
