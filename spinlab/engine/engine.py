"""The run engine: runs a plan and owns everything around it.

``RunEngine(root="runs").run(plan, device="sim:vortex", seed=3)`` makes the run directory,
opens (and locks) the device, emits the documents (:mod:`spinlab.engine.documents`) to the
run-file writer and the other subscribers, serves pause / resume / abort at every step,
handles SIGINT / SIGTERM / SIGHUP, and on every exit path puts the device's outputs in their
safe state (bias ramped down, AWG off) before it marks the run ``completed``, ``aborted``,
``interrupted`` or ``failed``. ``resume(run_dir)`` continues a run that did not complete from
its last completed step, with the same plan, config, seed and device address. A run directory
is locked while a process runs or resumes it (:mod:`spinlab.engine.rundir`); a resume rebuilds
its files without losing a step (:func:`spinlab.engine.runfile.recover`) and refuses a device,
station file or instrument other than the one the run started on unless forced.

Plans see only a :class:`RunContext`. Every call on it is a checkpoint: pending control
commands are obeyed and a deferred signal is raised there, so no plan calls a checkpoint itself.
A plan composes others with ``ctx.run(plan)``: each runs as a stage with its own run directory
inside the composing run's (``stages/<n>-<name>``), on the same open device.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spinlab import locks
from spinlab.catalog.location import catalog_url
from spinlab.catalog.rundirs import Recorder
from spinlab.device import Device, noting_measurements
from spinlab.engine.documents import (
    DatasetDoc,
    DescriptorDoc,
    Document,
    EventDoc,
    OpeningDoc,
    PreviewDoc,
    ProgressDoc,
    ResultDoc,
    StartDoc,
    StopDoc,
    TelemetryDoc,
    data_keys,
    now,
    package_versions,
    to_jsonable,
)
from spinlab.engine.figures import FigureOptions
from spinlab.engine.plan import Plan, plan_factory
from spinlab.engine.plots import PlotWriter
from spinlab.engine.rundir import (
    LOCK_FILE,
    RunDirLock,
    absolute_address,
    address_change,
    address_sha256,
    identity_change,
)
from spinlab.engine.runfile import (
    JOURNAL_FILE,
    RESERVE_FILE,
    Recovery,
    RunFileWriter,
    check_name,
    read_outcome,
    recover,
)
from spinlab.engine.signals import SignalGuard, stops_with
from spinlab.errors import ConfigError, RunAborted, RunInterrupted, RunStopping, with_run_path
from spinlab.registry import open_device
from spinlab.waveform import Waveform

log = logging.getLogger("spinlab.engine")

#: what a refused resume may do instead
_FORCE = (
    "put it back as it was, or resume with --force to continue anyway (the steps measured from "
    "now on will not match the kept ones)"
)

Subscriber = Callable[[str, Mapping[str, Any]], None]
#: plan name -> its factory (``factory(config, **overrides) -> Plan``); resume and stages use it
PlanLookup = Callable[[str], Callable[..., Plan]]
#: address -> open Device (``open_device(address, defaults={"seed": ...})``)
DeviceOpener = Callable[..., Device]

#: How long the engine waits for a worker thread to stop before it switches the outputs off
#: anyway (a worker stops at its next record; the bench's lock still makes outputs-off wait
#: for the record in progress).
WORKER_STOP_S = 10.0


@dataclass
class RunResult:
    """What ``RunEngine.run`` returns for a completed run."""

    run_id: str
    path: Path
    status: str
    summary: dict[str, Any]
    events: int = 0

    @property
    def run_file(self) -> Path:
        return self.path / "run.h5"


@dataclass
class RunState:
    """A run as a status query sees it (the control channel reads this)."""

    run_id: str
    kind: str
    path: Path
    status: str = "starting"
    last_progress: dict[str, Any] = field(default_factory=dict)
    events: Any = None  # has ``dropped`` once a ZeroMQ publisher is attached
    _publish: Callable[[str, Mapping[str, Any]], None] | None = None

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        if self._publish is not None:
            self._publish(topic, payload or {})


class Control(Protocol):
    """A run's control channel, as the engine sees it: served at every checkpoint (it may
    raise :class:`~spinlab.errors.RunAborted` or :class:`~spinlab.errors.RunInterrupted` there)
    and closed when the run ends. ``ControlServer``, a stage's view of its composing run and a
    sweep's ``StopPoll`` implement it."""

    def service(self) -> None: ...

    def close(self) -> None: ...


#: what ``RunEngine.run(..., control=...)`` takes: called once the run's state exists
ControlFactory = Callable[[RunState], Control]


class _Dropped:
    def __init__(self, subscribers: Sequence[Any]) -> None:
        self._subscribers = subscribers

    @property
    def dropped(self) -> int:
        return int(sum(getattr(s, "dropped", 0) for s in self._subscribers))


def seed_stream(seed: int, name: str) -> np.random.Generator:
    """The random stream ``name`` of a run seeded with ``seed``: a child of
    ``SeedSequence(seed)`` whose spawn key is derived from the name, so streams are independent
    of each other and of the order in which a plan asks for them."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(name.encode()),)))


class RunContext:
    """What a plan body may do. Every method is a checkpoint (control + signals)."""

    def __init__(self, active: _ActiveRun) -> None:
        self._run = active

    # --- what the plan knows -----------------------------------------------------------------
    @property
    def device(self) -> Device | None:
        return self._run.device

    @property
    def seed(self) -> int:
        return self._run.seed

    @property
    def path(self) -> Path:
        """The run directory (for artefacts a plan writes itself, e.g. a twin checkpoint)."""
        return self._run.path

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def resuming(self) -> bool:
        """True while a resumed run re-reads steps it had already completed."""
        return bool(self._run.replay)

    def plan(self, name: str, config: Mapping[str, Any] | None = None) -> Plan:
        """The plan ``name`` with ``config``, found the way this run's engine finds plans (its
        ``plans`` lookup: the installed plans by default), e.g. to run it as a stage."""
        return self._run.engine.plans(name)(config or {})

    def rng(self, name: str) -> np.random.Generator:
        """A random stream for one purpose (``"mask"``, ``"drives/3"``); see :func:`seed_stream`."""
        return seed_stream(self._run.seed, name)

    # --- steps -------------------------------------------------------------------------------
    def measure(
        self,
        stream: str,
        step: Callable[[Device], Mapping[str, Any]],
        *,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one step on the device and record what it returns (arrays by dataset name, rows
        along axis 0; ``attrs`` maps a dataset name to attributes such as ``dt_s``). The step is
        durable before this returns. On a resumed run a step that had completed is not run
        again: its recorded data is returned. Safe to call from a worker thread: the engine
        then stops that thread (it raises :class:`~spinlab.errors.RunStopping` at its next
        step or record) and waits for it before the outputs go off, on every exit path."""
        return self._run.step(stream, step, key, meta, attrs, needs_device=True)

    def record(
        self,
        stream: str,
        data: Mapping[str, Any],
        *,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Record a step that needs no device (computed data) the same durable way."""
        return self._run.step(stream, lambda _device: data, key, meta, attrs, needs_device=False)

    # --- everything else ---------------------------------------------------------------------
    def save(self, name: str, data: Any, **attrs: Any) -> None:
        """Store a named array (a Waveform keeps ``dt_s``, ``unit`` and ``t0_s``). ``name`` is a
        path of identifiers; give ``unit=`` unless the name ends in one (``_V``), and ``dt_s=``
        for a time series (see :mod:`spinlab.engine.runfile`)."""
        check_name(name)
        if isinstance(data, Waveform):
            attrs = {"dt_s": data.dt_s, "unit": data.unit, "t0_s": data.t0_s, **attrs}
            data = data.samples
        self._run.emit(
            "dataset", DatasetDoc(run_id=self.run_id, name=name, data=np.asarray(data), attrs=attrs)
        )

    def result(self, **values: Any) -> None:
        self._run.emit("result", ResultDoc(run_id=self.run_id, values=to_jsonable(values)))

    def progress(self, done: int, total: int, stage: str = "", **fields: Any) -> None:
        doc = ProgressDoc(run_id=self.run_id, done=int(done), total=int(total), stage=stage)
        self._run.emit("progress", {**doc, **to_jsonable(fields)})  # a plan's own fields too

    def publish(
        self, topic: str, payload: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None
    ) -> None:
        """Live telemetry for monitors (``twin.loss``, ``acquire.batch``, ...); not recorded."""
        self._run.emit(
            "telemetry",
            TelemetryDoc(
                run_id=self.run_id,
                topic=topic,
                payload=to_jsonable(dict(payload or {})),
                arrays=dict(arrays or {}),
            ),
        )

    def preview(self, name: str, waveform: Waveform) -> None:
        self._run.emit("preview", PreviewDoc(run_id=self.run_id, name=name, waveform=waveform))

    def instrument_status(self, name: str, **fields: Any) -> None:
        self.publish("instrument.status", {"name": name, **fields})

    def checkpoint(self) -> None:
        """An explicit checkpoint for long computations between steps (e.g. training)."""
        self._run.checkpoint()

    @property
    def stopping(self) -> bool:
        """True once the run is ending: a worker thread should end now (see :meth:`measure`)."""
        return self._run.stopping.is_set()

    # --- composition -------------------------------------------------------------------------
    def run(self, plan: Plan, device: str | Device | None = None, *, stage: str | None = None) -> RunResult:
        """Run ``plan`` as a stage of this run and return its result.

        The stage is a run of its own (run file, plots, journal) in ``stages/<n>-<stage>`` inside
        this run's directory, with this run's seed. It uses this run's device unless ``device``
        names another: an address is opened for the stage and closed after it, while this run's
        device stays open (a bench is never opened twice at once) and has its outputs switched
        off after every stage. Its progress (labelled ``stage: ...``), telemetry and previews
        reach this run's subscribers as this run's; control commands and signals stop it as they
        stop this run. When this run is resumed, a stage that had completed is read back from
        its run file and one that had not is resumed from its last completed step.
        """
        return self._run.stage(plan, device, stage or plan.name)


class _StageRelay:
    """A stage's live documents, re-emitted as the composing run's (never a checkpoint there:
    the stage's own checkpoints serve the control channel and signals)."""

    LIVE = ("progress", "telemetry", "preview")

    def __init__(self, parent: _ActiveRun, stage: str) -> None:
        self.parent, self.stage = parent, stage

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name not in self.LIVE:
            return
        relayed: dict[str, Any] = {**doc, "run_id": self.parent.run_id}
        if name == "progress":
            relayed["stage"] = f"{self.stage}: {doc['stage']}" if doc.get("stage") else self.stage
        self.parent.emit(name, relayed, checkpoint=False)  # type: ignore[arg-type]


class _StageControl(Control):
    """What a stage's engine sees as its control channel: the composing run's checkpoint."""

    def __init__(self, checkpoint: Callable[[], None]) -> None:
        self._checkpoint = checkpoint

    def service(self) -> None:
        self._checkpoint()

    def close(self) -> None:
        """The channel belongs to the composing run; it stays open."""

    def for_run(self, state: RunState) -> Control:
        """As a :data:`ControlFactory`: the stage's run gets this channel."""
        return self


class _ActiveRun:
    """One execution: documents, counters, replay of a resumed run's journal."""

    def __init__(
        self,
        *,
        engine: RunEngine,
        plan: Plan,
        run_id: str,
        path: Path,
        seed: int,
        device: Device | None,
        writer: RunFileWriter,
        subscribers: Sequence[Subscriber],
        guard: SignalGuard,
        state: RunState,
        replay: Mapping[tuple[str, int], dict[str, Any]],
    ) -> None:
        self.engine = engine
        self.plan, self.run_id, self.path, self.seed = plan, run_id, path, seed
        self.stages = 0
        self.device, self.writer, self.subscribers = device, writer, list(subscribers)
        self.guard, self.state = guard, state
        self.replay = dict(replay)
        self.control: Control | None = None
        self.seqs: dict[str, int] = {}
        self.described: set[str] = set()
        self.events = 0
        self.results: dict[str, Any] = {}
        self.thread = threading.current_thread()  # the run's own thread obeys control commands
        self._lock = threading.RLock()
        #: set when the run ends; the worker threads that recorded through it stop at their next
        #: step or record, and the engine waits for them before the outputs go off
        self.stopping = threading.Event()
        self.workers: set[threading.Thread] = set()

    def emit(self, name: str, doc: Document, *, checkpoint: bool = True) -> None:
        """Hand ``doc`` (its ``name``'s TypedDict) to the run-file writer (durable documents,
        under deferred signals) and to every subscriber; then a checkpoint unless told not to."""
        with self._lock:
            if name == "progress":
                self.state.last_progress = {k: v for k, v in doc.items() if k != "run_id"}
            if name == "result":
                self.results.update(doc["values"])  # type: ignore[typeddict-item]  # a ResultDoc
            if name in ("start", "descriptor", "event", "dataset", "result", "stop"):
                with self.guard.deferred():  # a signal never tears a write
                    self.writer(name, doc)
            for subscriber in self.subscribers:
                try:
                    subscriber(name, doc)
                except Exception:  # monitoring, progress and plots never break a run
                    log.exception("subscriber %r failed on %s", subscriber, name)
        if checkpoint:
            self.checkpoint()

    def checkpoint(self) -> None:
        if threading.current_thread() is not self.thread:
            self._enlist()  # control commands and signals are the run thread's to obey
            return
        if self.control is not None:
            self.control.service()
        self.guard.raise_pending()

    def _enlist(self) -> None:
        """Note a worker thread, so the run stops and waits for it before the outputs go off;
        refuse it once the run is stopping (checked under the lock that ``stop_workers`` sets
        the stop under, so no worker slips past both)."""
        with self._lock:
            if self.stopping.is_set():
                raise RunStopping(f"run {self.run_id} is ending; this worker thread stops")
            self.workers.add(threading.current_thread())

    def stop_workers(self, timeout_s: float = WORKER_STOP_S) -> None:
        """Stop every worker thread and wait for it (at most ``timeout_s`` in all)."""
        with self._lock:
            self.stopping.set()
            workers = [t for t in self.workers if t is not threading.current_thread()]
        deadline = time.monotonic() + timeout_s
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "worker thread %r did not stop within %.0f s; switching the outputs off "
                    "anyway (it can start no new record)",
                    thread.name,
                    timeout_s,
                )

    def step(
        self,
        stream: str,
        run: Callable[[Any], Mapping[str, Any]],
        key: str | None,
        meta: Mapping[str, Any] | None,
        attrs: Mapping[str, Mapping[str, Any]] | None,
        *,
        needs_device: bool,
    ) -> dict[str, np.ndarray]:
        with self._lock:
            seq = self.seqs.get(stream, 0)
            self.seqs[stream] = seq + 1
        key = key or f"{stream}/{seq}"
        done = self.replay.pop((stream, seq), None)
        if done is not None:
            if done["key"] != key:
                raise ConfigError(
                    f"cannot resume: step {seq} of stream {stream!r} was {done['key']!r} in the "
                    f"interrupted run but the plan now asks for {key!r}; the plan is not "
                    "deterministic for this config (start a new run instead)"
                )
            with self._lock:
                self.events += 1
            return {k: np.asarray(v) for k, v in done["data"].items()}
        self.checkpoint()
        if needs_device and self.device is None:
            raise ConfigError(f"plan {self.plan.name!r} measured on stream {stream!r} without a device")
        # a worker stops at the device's next record; a bench's measured field is noted
        with stops_with(self.stopping), noting_measurements() as measured:
            data = {check_name(name): np.asarray(value) for name, value in dict(run(self.device)).items()}
        if measured:  # the set and measured conditions of each device call (a bench's field)
            meta = {**(meta or {}), "responses": measured}
        with self._lock:
            if stream not in self.described:
                self.described.add(stream)
                self.emit(
                    "descriptor",
                    DescriptorDoc(run_id=self.run_id, stream=stream, data_keys=data_keys(data)),
                    checkpoint=False,
                )
            self.events += 1
            self.emit(
                "event",
                EventDoc(
                    run_id=self.run_id,
                    stream=stream,
                    seq=seq,
                    key=key,
                    time=time.time(),
                    data=data,
                    meta=to_jsonable(dict(meta or {})),
                    attrs=to_jsonable(dict(attrs or {})),
                ),
                checkpoint=False,
            )
        self.checkpoint()  # after the step is on disk: a stop here loses nothing
        return data

    def stage(self, plan: Plan, device: str | Device | None, name: str) -> RunResult:
        """See :meth:`RunContext.run`."""
        self.checkpoint()
        self.stages += 1
        path = self.path / "stages" / f"{self.stages}-{name}"
        done = read_outcome(path)
        if done is not None and done["status"] == "completed":
            return RunResult(done["run_id"], path, "completed", done["results"], done["events"])
        engine = self.engine.at(path.parent)
        target = self.device if device is None else device
        relay = [_StageRelay(self, name)]
        control = None if self.control is None else _StageControl(self.checkpoint).for_run
        if (path / JOURNAL_FILE).is_file():
            return engine.resume(path, target, subscribers=relay, control=control)
        if path.is_dir() and all(p.name in (LOCK_FILE, RESERVE_FILE) for p in path.iterdir()):
            for leftover in path.iterdir():  # killed between mkdir and its journal
                leftover.unlink()
            path.rmdir()
        return engine._execute(
            plan,
            target,
            seed=self.seed,
            run_id=f"{self.run_id}.{self.stages}-{name}",
            path=path,
            subscribers=relay,
            control=control,
        )


class RunEngine:
    """Runs plans; see the module docstring. ``root`` is where run directories go.

    ``plans`` finds a plan's factory by name (what ``resume`` rebuilds a run's plan with; the
    ``spinlab.plans`` entry points by default) and ``open_device`` opens an address (the
    ``spinlab.devices`` schemes by default): give your own to run plans or devices that are not
    installed, as :mod:`spinlab.testing` does. Stages run with the same two.

    ``catalog`` is the URL of the catalog every run is recorded in as it starts and stops
    (:mod:`spinlab.catalog`; None or True: ``SPINLAB_CATALOG``, the runs folder's
    ``catalog.toml`` or its ``catalog.sqlite``), False for none; a catalog write that fails is
    logged, never fatal."""

    def __init__(
        self,
        root: str | Path = "runs",
        *,
        plans: PlanLookup | None = None,
        open_device: DeviceOpener | None = None,
        sync_interval_s: float | None = 1.0,
        catalog: str | bool | None = None,
        figures: FigureOptions | None = None,
    ) -> None:
        self.root = Path(root)
        self._catalog = catalog
        self.plans: PlanLookup = plans or plan_factory
        self.open_device: DeviceOpener = open_device or _open_address
        #: how far apart the journal is synced to disk (see spinlab.engine.journal)
        self.sync_interval_s = sync_interval_s
        #: the format and resolution of the runs' figures (recorded in each run file)
        self.figures = figures or FigureOptions()

    def at(self, root: str | Path) -> RunEngine:
        """This engine (same plans, device opener, sync interval, figures) writing runs into ``root``."""
        return RunEngine(
            root,
            plans=self.plans,
            open_device=self.open_device,
            sync_interval_s=self.sync_interval_s,
            catalog=self.catalog or False,  # a stage is recorded where its run is
            figures=self.figures,
        )

    @property
    def catalog(self) -> str | None:
        """The catalog URL runs are recorded in (None: not recorded)."""
        if self._catalog is None or self._catalog is True:
            try:
                self._catalog = catalog_url(self.root) or False
            except Exception as exc:  # a broken catalog.toml never stops a run
                log.warning("no catalog for %s: %s", self.root, exc)
                self._catalog = False
        return self._catalog if isinstance(self._catalog, str) else None

    def run(
        self,
        plan: Plan,
        device: str | Device | None = None,
        *,
        seed: int = 0,
        subscribers: Iterable[Subscriber] = (),
        control: ControlFactory | None = None,
    ) -> RunResult:
        """Run ``plan`` on ``device`` (an address, which the engine opens, locks and closes, or a
        Device you own, whose outputs the engine still switches off at the end)."""
        run_id = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{plan.name}-{secrets.token_hex(3)}"
        return self._execute(
            plan,
            device,
            seed=int(seed),
            run_id=run_id,
            path=self.root / run_id,
            subscribers=list(subscribers),
            control=control,
        )

    def resume(
        self,
        run_dir: str | Path,
        device: str | Device | None = None,
        *,
        force: bool = False,
        subscribers: Iterable[Subscriber] = (),
        control: ControlFactory | None = None,
    ) -> RunResult:
        """Continue the run in ``run_dir`` from its last completed step (same plan, config,
        seed and, unless ``device`` is given, the same device address). The directory is locked
        first; a device, station file or instrument that is not the one the run started on is
        refused unless ``force``. Logs what was kept and where measuring starts again."""
        path = Path(run_dir)
        lock = RunDirLock(path)  # before anything in the directory is read
        try:
            recovery = recover(path)
            first = recovery.start
            plan = self.plans(first["plan"])(first.get("config") or {})
            target = device if device is not None else first.get("address")
            change = address_change(first, target) if isinstance(target, str) and not force else None
            if change:
                raise ConfigError(f"cannot resume {path}: {change}; {_FORCE}")
        except BaseException:
            lock.release()
            raise
        starts = sum(1 for r in recovery.records if r.get("doc") == "start")
        return self._recorded_figures(first)._execute(
            plan,
            target,
            seed=int(first.get("seed", 0)),
            run_id=first["run_id"],
            path=path,
            subscribers=list(subscribers),
            control=control,
            recovery=recovery,
            lock=lock,
            force=force,
            resumed=starts,
        )

    def _recorded_figures(self, start: Mapping[str, Any]) -> RunEngine:
        """This engine, drawing in the format and resolution the run was started with."""
        if not start.get("figures"):
            return self  # a run from before figures were recorded
        try:
            figures = FigureOptions(**dict(start["figures"]))
        except (ConfigError, TypeError, ValueError):  # an older or damaged start: the engine's own
            return self
        engine = self.at(self.root)
        engine.figures = figures
        return engine

    # --- the one code path -------------------------------------------------------------------
    def _execute(
        self,
        plan: Plan,
        device: str | Device | None,
        *,
        seed: int,
        run_id: str,
        path: Path,
        subscribers: Sequence[Subscriber],
        control: ControlFactory | None,
        recovery: Recovery | None = None,
        lock: RunDirLock | None = None,
        force: bool = False,
        resumed: int = 0,
    ) -> RunResult:
        """Run ``plan`` in ``path``: a new directory, or (``recovery``) the locked directory of
        a run being resumed, whose files are rebuilt once the device is open and checked."""
        try:
            if plan.needs_device and device is None:
                raise ConfigError(f"plan {plan.name!r} needs a device address (--device)")
            if isinstance(device, str):
                device = absolute_address(device)
            with SignalGuard() as guard, locks.current_run(run_id):
                _announce(
                    subscribers,
                    "opening",
                    OpeningDoc(
                        run_id=run_id,
                        plan=plan.name,
                        config=plan.config_dict(),
                        seed=seed,
                        address=device if isinstance(device, str) else getattr(device, "address", None),
                        path=str(path),
                        resumed=resumed,
                    ),
                )
                opened: Device | None = None
                writer: RunFileWriter | None = None
                try:
                    with guard.deferred():  # opening and configuring instruments is not interruptible
                        if isinstance(device, str):
                            opened = self.open_device(device, defaults={"seed": seed})
                        dev: Device | None = opened if isinstance(device, str) else device
                        if recovery is None:
                            path.mkdir(parents=True, exist_ok=False)
                            lock = RunDirLock(path)
                            writer = RunFileWriter(path, sync_interval_s=self.sync_interval_s)
                        else:
                            _check_identity(path, recovery.start, dev, force)
                            writer = RunFileWriter.rebuild(
                                path, recovery, sync_interval_s=self.sync_interval_s
                            )
                            log.warning("resuming %s: %s", run_id, recovery.summary())
                except BaseException as exc:
                    if opened is not None:
                        with guard.shielded():
                            _safe_close(opened)
                    if writer is not None:
                        writer.close()
                    interrupted = guard.wins_over(exc)  # a signal held during the open wins
                    _announce_failed_opening(subscribers, run_id, interrupted or exc)
                    if interrupted is None:
                        raise
                    if path.is_dir():
                        with_run_path(interrupted, path)
                    raise interrupted from exc
                replay = (
                    {}
                    if recovery is None
                    else {
                        (r["stream"], int(r["seq"])): r for r in recovery.records if r.get("doc") == "event"
                    }
                )
                state = RunState(run_id, plan.name, path)
                active = _ActiveRun(
                    engine=self,
                    plan=plan,
                    run_id=run_id,
                    path=path,
                    seed=seed,
                    device=dev,
                    writer=writer,
                    guard=guard,
                    state=state,
                    replay=replay,
                    # the figures are drawn before the caller's subscribers hear the stop, with
                    # their progress sent to them (the run file is closed by then, so not recorded)
                    subscribers=[
                        PlotWriter(
                            plan.plots,
                            path,
                            options=self.figures,
                            progress=_figure_progress(subscribers, run_id),
                        ),
                        *subscribers,
                        *self._recorder(),
                    ],
                )
                # control-channel notices: never a checkpoint (the control channel itself sends them)
                state._publish = lambda topic, payload: active.emit(
                    "telemetry",
                    TelemetryDoc(run_id=run_id, topic=topic, payload=to_jsonable(dict(payload)), arrays={}),
                    checkpoint=False,
                )
                state.events = _Dropped(active.subscribers)
                return self._drive(active, plan, dev, opened, control, resumed)
        finally:
            if lock is not None:
                lock.release()

    def _recorder(self) -> list[Subscriber]:
        return [Recorder(self.catalog)] if self.catalog else []

    def _drive(
        self,
        active: _ActiveRun,
        plan: Plan,
        dev: Device | None,
        opened: Device | None,
        control: ControlFactory | None,
        resumed: int,
    ) -> RunResult:
        guard, state = active.guard, active.state
        status, reason = "failed", ""
        error: BaseException | None = None
        summary: dict[str, Any] = {}
        try:
            active.emit(
                "start",
                StartDoc(
                    run_id=active.run_id,
                    kind=plan.name,
                    plan=plan.name,
                    config=plan.config_dict(),
                    seed=active.seed,
                    address=getattr(dev, "address", None) or None,
                    address_sha256=address_sha256(getattr(dev, "address", None) or ""),
                    identity=to_jsonable(dev.identity()) if dev is not None else {},
                    versions=package_versions(),
                    path=str(active.path),
                    started=now(),
                    resumed=resumed,
                    nexus=dict(plan.nexus),
                    figures=active.engine.figures.as_dict(),
                ),
            )
            state.status = "running"
            if control is not None:
                active.control = control(state)
            summary = dict(plan.body(RunContext(active)) or {})
            if active.replay:
                raise ConfigError(
                    f"cannot resume: {len(active.replay)} recorded step(s) were not asked "
                    "for again; the plan is not deterministic for this config"
                )
            status = "completed"
        except RunAborted as exc:
            status, reason, error = "aborted", str(exc), exc
        except BaseException as exc:
            error = guard.wins_over(exc) or exc  # a signal wins over the error it surfaced as
            if isinstance(error, (RunInterrupted, KeyboardInterrupt)):
                status, reason = "interrupted", str(error) or "KeyboardInterrupt"
            else:
                status, reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with guard.shielded():
                state.status = status
                active.stop_workers()  # nothing drives the device once its outputs go off
                if dev is not None:
                    _outputs_off(dev)
                try:
                    active.emit(
                        "stop",
                        StopDoc(
                            run_id=active.run_id,
                            status=status,
                            reason=reason,
                            error=type(error).__name__ if error else None,
                            results=to_jsonable(active.results),
                            events=active.events,
                            time=now(),
                            monitor_dropped=state.events.dropped,
                        ),
                        checkpoint=False,
                    )
                except Exception:
                    log.exception("could not record the end of run %s", active.run_id)
                    active.writer.close()
                if active.control is not None:
                    _quietly(active.control.close)
                if opened is not None:
                    _safe_close(opened)
        if error is not None:
            raise with_run_path(error, active.path)
        return RunResult(active.run_id, active.path, status, to_jsonable(summary), active.events)


def _open_address(address: str, **options: Any) -> Device:
    """The registry's ``open_device``, looked up when called."""
    return open_device(address, **options)


def _check_identity(path: Path, start: Mapping[str, Any], device: Device | None, force: bool) -> None:
    """Refuse to resume on a device whose identity differs from the one the run started on."""
    if force or device is None or not start.get("identity"):
        return
    change = identity_change(start["identity"], to_jsonable(device.identity()))
    if change:
        raise ConfigError(
            f"cannot resume {path}: the device is not the one the run started on ({change}); {_FORCE}"
        )


def _announce(subscribers: Sequence[Subscriber], name: str, doc: Document) -> None:
    """A document for the caller's subscribers only, outside a started run: ``opening`` before
    the device is opened (seconds on a bench), so live views show the run from then on rather
    than from ``start``; and the ``stop`` of a run whose opening failed."""
    for subscriber in subscribers:
        try:
            subscriber(name, doc)
        except Exception:  # monitoring never breaks a run
            log.exception("subscriber %r failed on %s", subscriber, name)


def _figure_progress(subscribers: Sequence[Subscriber], run_id: str) -> Callable[[int, int], None]:
    """Progress of the figures (phase ``figures``), drawn after the run file is closed."""
    return lambda done, total: _announce(
        subscribers, "progress", ProgressDoc(run_id=run_id, done=done, total=total, stage="figures")
    )


def _announce_failed_opening(subscribers: Sequence[Subscriber], run_id: str, error: BaseException) -> None:
    interrupted = isinstance(error, (RunInterrupted, KeyboardInterrupt))
    _announce(
        subscribers,
        "stop",
        StopDoc(
            run_id=run_id,
            status="interrupted" if interrupted else "failed",
            reason=(str(error) or type(error).__name__)
            if interrupted
            else f"{type(error).__name__}: {error}",
            error=type(error).__name__,
            results={},
            events=0,
            time=now(),
            monitor_dropped=0,
        ),
    )


def _outputs_off(device: Device) -> None:
    try:
        device.outputs_off()
    except Exception:
        log.exception(
            "could not put %s in its safe state; check its outputs by hand",
            getattr(device, "address", device),
        )


def _safe_close(device: Device) -> None:
    try:
        device.close()
    except Exception:
        log.exception("closing %s failed", getattr(device, "address", device))


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.exception("cleanup step %r failed", fn)


__all__ = [
    "RunEngine",
    "RunContext",
    "RunResult",
    "RunState",
    "Control",
    "ControlFactory",
    "PlanLookup",
    "DeviceOpener",
    "Subscriber",
    "seed_stream",
]
