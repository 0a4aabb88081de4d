"""Running a sweep on Dask distributed: a ``LocalCluster`` started for the sweep (one worker
process per core) or an existing cluster by its scheduler address (``dask scheduler`` /
``dask worker``, dask-jobqueue on SLURM, ...). Dask does the scheduling: the points are
submitted as tasks and their results collected as they complete.

* **Hardware is one resource.** Points on a ``bench:`` address need one unit of the Dask worker
  resource named after the station (``station-emulated``); exactly one worker may offer it
  (the one attached to the instruments: ``dask worker ADDR --resources station-lab=1``), so Dask
  never runs two of them at once, on any number of workers, and a restarted worker takes over.
  A local cluster for a hardware sweep is one worker holding it. Simulators and twins need
  nothing and run side by side.
* **Resumable.** Each finished point is journalled at once (:mod:`spinlab.sweeps.summary`);
  running the same sweep again skips the points already completed (by their config hash) and
  resumes an interrupted one from its run's last completed step. Each attempt at a point runs
  in a directory named after it (``runs/PLAN-KEY-ATTEMPT``), so the run of a point whose sweep
  was killed (SIGKILL, a power cut) is found and resumed, not left ``running`` beside a new one.
* **Fault tolerant.** A worker that dies has its point re-run on another (the scheduler's
  ``allowed-failures``); a point that fails is recorded with its error and the rest go on.
* **Ctrl-C / SIGTERM / SIGHUP** set the sweep's stop event: points not started are cancelled, running
  ones stop at their next checkpoint the safe way (outputs off), their records are kept, and
  the summary is written; a second signal stops waiting for simulator points (never for a
  point on hardware, whose outputs must go off first).

* **The dashboard stays on this machine.** A local cluster's Dask dashboard (identity, workers,
  logs) listens on 127.0.0.1 unless the sweep is given another host, which is warned about.

Observers ``observer(name, doc)`` see ``start`` (the plan, mode, workers, dashboard), ``point``
(a point started running or finished: its record), ``progress`` (counts and ETA), ``notice``
(a line for the user) and ``stop``.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from spinlab.engine import journal as journal_mod
from spinlab.engine.documents import now, to_jsonable
from spinlab.engine.figures import FigureOptions
from spinlab.engine.runfile import JOURNAL_FILE
from spinlab.engine.signals import SignalGuard
from spinlab.errors import ClusterError, ConfigError, RunInterrupted
from spinlab.sweeps import summary
from spinlab.sweeps.plots import metrics as default_metrics
from spinlab.sweeps.plots import plot_metric
from spinlab.sweeps.spec import Point, SweepSpec
from spinlab.sweeps.worker import run_point

log = logging.getLogger("spinlab.sweeps")

Observer = Callable[[str, Mapping[str, Any]], None]

#: Seconds between two rewrites of the summary files while points complete (the journal has
#: every record at once; the summary is rewritten at the end and on Ctrl-C in any case).
SUMMARY_INTERVAL_S = 10.0
#: Dask settings of a local cluster, each measured by benchmarks/bench_sweep_overhead.py:
#: * worker environment: one BLAS thread (Dask's default) but not Dask's
#:   ``MALLOC_TRIM_THRESHOLD_``, which switches off glibc's adaptive mmap threshold: every large
#:   numpy temporary is then mapped and unmapped again, ten times the page faults and ~10 % more
#:   CPU time per characterisation point;
#: * the workers' statistical profiler (a sample every 10 ms, for a dashboard page that points
#:   of seconds to hours do not need) is off, and the event loops' responsiveness check ticks
#:   every second instead of every 20 ms: half the CPU an idle cluster burns.
LOCAL_CONFIG = {
    "distributed.nanny.pre-spawn-environ": {
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    },
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}
#: How long a sweep waits for an existing cluster's scheduler to answer, and for its first worker.
CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 30.0
#: Where a local cluster's dashboard listens unless told otherwise: this machine only.
DASHBOARD = "127.0.0.1:8787"
_DASHBOARD_RE = re.compile(r"^(?:(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):)?(?P<port>\d+)$")


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns (also when interrupted)."""

    out: Path
    table: list[dict[str, Any]]
    mode: str
    ran: int
    skipped: int
    interrupted: bool = False
    #: the signal that stopped the sweep (exit status 128 + it), None when none did
    signal: int | None = None
    files: dict[str, Path] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.table)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    processes: bool = True,
    observers: Iterable[Observer] = (),
    metrics: Sequence[str] | None = None,
    dashboard: bool | str = True,
    figures: FigureOptions | None = None,
) -> SweepResult:
    """Run every point of ``spec`` not yet completed in ``out``; see the module docstring.

    ``scheduler``: None (a local cluster of ``workers`` processes, default one per core;
    ``processes=False`` makes them threads of this process), a scheduler address
    (``tcp://host:8786``) or anything ``distributed.Client`` accepts (a dask-jobqueue cluster).
    ``metrics``: the results to plot (None: every numeric result that varies; empty: no plots).
    ``dashboard``: a local cluster's dashboard, True for :data:`DASHBOARD`, ``[HOST:]PORT`` or
    False for none. ``figures``: the format and resolution of the sweep's and its runs' figures.
    """
    return _Sweep(
        spec,
        Path(out).resolve(),
        scheduler,
        workers,
        processes,
        list(observers),
        metrics,
        dashboard,
        figures or FigureOptions(),
    ).run()


class _Sweep:
    def __init__(
        self,
        spec: SweepSpec,
        out: Path,
        scheduler: Any,
        workers: int | None,
        processes: bool,
        observers: list[Observer],
        metrics: Sequence[str] | None,
        dashboard: bool | str,
        figures: FigureOptions,
    ) -> None:
        self.figures = figures
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if isinstance(dashboard, str) and scheduler is not None:
            raise ConfigError(
                "--dashboard is for the local cluster; an existing cluster's scheduler "
                "serves its own (dask scheduler --dashboard-address)"
            )
        self.spec, self.out, self.scheduler = spec, out, scheduler
        self.workers, self.processes = workers, processes
        self.dashboard = dashboard_address(dashboard) if scheduler is None else bool(dashboard)
        self.observers, self.metrics = observers, metrics
        self.points = spec.points()
        self.by_key = {p.key: p for p in self.points}
        self.token = secrets.token_hex(4)
        self.records: dict[str, dict[str, Any]] = {}
        self.running: dict[str, dict[str, Any]] = {}
        self.finished_now = 0
        self.mode = ""
        self.signal: int | None = None
        self._events: queue.Queue = queue.Queue()
        self._written = 0.0
        self._t0 = time.monotonic()

    # --- the whole sweep -----------------------------------------------------------------------
    def run(self) -> SweepResult:
        self.out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.out / ".sweep.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ConfigError(
                f"another sweep is running in {self.out}; wait for it to end or give this one another --out"
            ) from None
        try:
            self.records = summary.read_records(self.out)
            todo = [p for p in self.points if self.records.get(p.key, {}).get("status") != "completed"]
            self.journal = journal_mod.Journal(self.out / summary.JOURNAL)
            status = "failed"
            try:
                if todo:
                    self.signal = self._execute(todo)
                    status = "interrupted" if self.signal else "completed"
                else:
                    self.mode, status = "nothing to run", "completed"
                    self._emit(
                        "notice",
                        {"text": f"all {len(self.points)} points are already completed in {self.out}"},
                    )
            finally:
                self.journal.close()
                result = self._finish(len(todo), status)
        finally:
            lock.release()
        return result

    def _finish(self, todo: int, status: str) -> SweepResult:
        table = self._write_summary()
        plots = self._plots(table) if status != "failed" else []
        result = SweepResult(
            self.out,
            table,
            self.mode,
            ran=self.finished_now,
            skipped=len(self.points) - todo,
            interrupted=status == "interrupted",
            signal=self.signal,
            files={"h5": self.out / summary.SUMMARY_H5, "csv": self.out / summary.SUMMARY_CSV},
            plots=plots,
        )
        self._emit(
            "stop",
            {
                "status": status,
                "total": len(table),
                **{s: result.count(s) for s in summary.STATUSES},
                "summary": str(result.files["h5"]),
                "plots": [str(p) for p in plots],
            },
        )
        return result

    # --- on the cluster ------------------------------------------------------------------------
    def _execute(self, todo: list[Point]) -> int | None:
        """Run ``todo`` on the cluster; the signal number when a signal stopped the sweep."""
        from distributed import Event, as_completed

        client = cluster = stop = completed = None
        futures: dict[Any, Point] = {}
        with SignalGuard() as guard:
            try:
                with guard.deferred():  # a signal is taken once the points are all submitted
                    client, cluster = self._connect()
                    workers = self._check_workers(client)
                    self._announce(client, workers, todo)
                    stop = Event(f"spinlab-sweep-stop-{self.token}", client=client)
                    client.subscribe_topic(self._topic, lambda event: self._events.put(event[1]))
                    futures = {self._submit(client, p, stop.name): p for p in todo}
                    completed = as_completed(list(futures), with_results=False)
                self._collect(completed, futures, guard)
                return None
            except RunInterrupted as exc:
                with guard.shielded():
                    if futures:
                        self._stop(client, stop, completed, futures, guard)
                return exc.signum
            finally:
                with guard.shielded():
                    if client is not None:
                        _quietly(client.close)
                    if cluster is not None:
                        _quietly(cluster.close)

    @property
    def _topic(self) -> str:
        return f"spinlab-sweep-{self.token}"

    def _connect(self) -> tuple[Any, Any]:
        from dask.system import CPU_COUNT
        from distributed import Client

        resource = self.spec.station_resource
        if self.scheduler is None:
            cluster = local_cluster(
                1 if resource else (self.workers or CPU_COUNT),
                processes=self.processes,
                resources={resource: 1} if resource else None,
                dashboard=self.dashboard,
            )
            return Client(cluster), cluster
        try:
            return Client(self.scheduler, timeout=CONNECT_TIMEOUT_S), None
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start one "
                "with `dask scheduler` and workers with `dask worker ADDRESS`"
            ) from None

    def _check_workers(self, client: Any) -> dict[str, Any]:
        address = client.scheduler.address
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ClusterError(
                f"no worker joined the Dask scheduler {address} within {WORKER_WAIT_S:g} s; "
                f"start some with `dask worker {address}`"
            ) from None
        workers = client.scheduler_info(n_workers=-1)["workers"]
        resource = self.spec.station_resource
        if resource:
            holders = {
                a: w["resources"][resource]
                for a, w in workers.items()
                if w.get("resources", {}).get(resource, 0) > 0
            }
            if not holders:
                raise ClusterError(
                    f"{self.spec.station} is hardware: its points need the Dask resource {resource}, "
                    f"and no worker of {address} offers it; start the worker that reaches the station "
                    f"with `dask worker {address} --resources {resource}=1`"
                )
            if len(holders) > 1 or sum(holders.values()) > 1:
                raise ClusterError(
                    f"{len(holders)} workers of {address} offer {sum(holders.values()):g} units of {resource} "
                    f"({', '.join(holders)}); a station is one resource: exactly one worker may offer "
                    f"{resource}=1, or two points would drive {self.spec.station} at once"
                )
        return workers

    def _announce(self, client: Any, workers: Mapping[str, Any], todo: Sequence[Point]) -> None:
        where = "local" if self.scheduler is None else client.scheduler.address
        if self.spec.station:
            self.mode = (
                f"hardware: {self.spec.station} is one station, its points run one at a "
                f"time (Dask worker resource {self.spec.station_resource})"
            )
        else:
            threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
            self.mode = (
                f"parallel: {_count(threads, 'point')} at a time on {_count(len(workers), 'worker')} "
                f"of the {where} Dask cluster"
            )
        link = self._dashboard(client)
        self._emit(
            "start",
            {
                "sweep": self.token,
                "plan": self.spec.plan,
                "device": self.spec.device,
                "out": str(self.out),
                "total": len(self.points),
                "todo": len(todo),
                "skipped": len(self.points) - len(todo),
                "mode": self.mode,
                "workers": len(workers),
                "scheduler": client.scheduler.address,
                "dashboard": link,
                "spec": self.spec.to_dict(),
            },
        )

    def _dashboard(self, client: Any) -> str | None:
        """The dashboard link, when the scheduler serves one (bokeh is installed there)."""
        if not self.dashboard or "dashboard" not in client.scheduler_info(n_workers=0).get("services", {}):
            return None
        try:
            has_bokeh = client.run_on_scheduler(_has_bokeh)
        except Exception:
            return None
        return client.dashboard_link if has_bokeh else None

    def _submit(self, client: Any, point: Point, stop_name: str) -> Any:
        previous = self.records.get(point.key, {})
        run = previous.get("run") or ""
        resume = (
            run if previous.get("status") == "interrupted" and (Path(run) / JOURNAL_FILE).is_file() else None
        )
        run_dir = self.out / "runs" / f"{self.spec.plan}-{point.key}-{previous.get('attempts', 0) + 1}"
        if resume is None and (run_dir / JOURNAL_FILE).is_file():
            self._emit(
                "notice",
                {
                    "text": f"point {point.index}: resuming its run {run_dir.name}, which a "
                    "killed sweep or worker left unfinished"
                },
            )
        task = {
            "key": point.key,
            "plan": self.spec.plan,
            "config": point.config,
            "address": point.address,
            "seed": point.seed,
            "runs": str(self.out / "runs"),
            "figures": self.figures.as_dict(),
            "resume": resume,
            "run_dir": str(run_dir),
            "topic": self._topic,
            "stop_event": stop_name,
        }
        resource = self.spec.station_resource
        return client.submit(
            run_point,
            task,
            key=f"{self.spec.plan}-{point.index}-{point.key}-{self.token}",
            pure=False,
            retries=0,
            resources={resource: 1} if resource else None,
        )

    def _collect(self, completed: Any, futures: Mapping[Any, Point], guard: SignalGuard) -> None:
        while not completed.is_empty():
            self._started_events()
            batch = completed.next_batch(block=False)
            if not batch:
                time.sleep(0.05)
                continue
            with guard.deferred():  # a signal never tears a record
                for future in batch:
                    self._record(futures[future], future)
                self._progress()

    def _stop(
        self, client: Any, stop: Any, completed: Any, futures: Mapping[Any, Point], guard: SignalGuard
    ) -> None:
        stop.set()
        self._started_events()
        client.cancel([f for f, p in futures.items() if p.key not in self.running and not f.done()])
        signals = len(guard.received)
        hardware = bool(self.spec.station)
        if self.running:
            self._emit(
                "notice",
                {
                    "text": f"stopping: {len(self.running)} running point(s) stop at "
                    "their next step" + ("" if hardware else " (Ctrl-C again to stop waiting)")
                },
            )
        while not completed.is_empty():
            if len(guard.received) > signals and not hardware:
                break
            batch = completed.next_batch(block=False)
            for future in batch:
                self._record(futures[future], future)
            if not batch:
                self._started_events()
                time.sleep(0.05)
        self._progress()

    # --- bookkeeping ---------------------------------------------------------------------------
    def _started_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            key = event.get("key")
            if event.get("event") != "start" or key not in self.by_key or self._done_now(key):
                continue
            self.running[key] = event
            point = self.by_key[key]
            self._emit(
                "point",
                {
                    "index": point.index,
                    "key": key,
                    "values": point.values,
                    "seed": point.seed,
                    "status": "running",
                    "worker": event.get("worker"),
                    "pid": event.get("pid"),
                },
            )
            self._progress()

    def _done_now(self, key: str) -> bool:
        return self.records.get(key, {}).get("token") == self.token

    def _record(self, point: Point, future: Any) -> None:
        self.running.pop(point.key, None)
        if future.status == "error":
            record = {
                "key": point.key,
                "status": "failed",
                "error": _task_error(future.exception()),
                "run": "",
                "results": {},
                "started": None,
                "stopped": None,
                "worker": "",
                "pid": None,
            }
        elif future.status == "finished":
            record = future.result()
        else:
            return  # cancelled by the sweep, or lost with the scheduler: the point stays pending
        if record["status"] == "cancelled":
            return
        record = {**to_jsonable(record), "token": self.token, "recorded": now()}
        self.journal.append({"doc": "point", **record})
        attempts = self.records.get(point.key, {}).get("attempts", 0) + 1
        self.records[point.key] = {**record, "attempts": attempts}
        self.finished_now += 1
        self._emit("point", {"index": point.index, "values": point.values, "seed": point.seed, **record})
        if time.monotonic() - self._written >= SUMMARY_INTERVAL_S:
            self._write_summary()

    def _progress(self) -> None:
        statuses = [self.records.get(p.key, {}).get("status") for p in self.points]
        done = sum(s in ("completed", "failed") for s in statuses)
        elapsed = time.monotonic() - self._t0
        eta = elapsed / self.finished_now * (len(self.points) - done) if self.finished_now else None
        self._emit(
            "progress",
            {
                "done": done,
                "total": len(self.points),
                "running": len(self.running),
                "failed": statuses.count("failed"),
                "eta_s": eta,
                "elapsed_s": elapsed,
            },
        )

    def _write_summary(self) -> list[dict[str, Any]]:
        table = summary.rows(self.points, self.records, self.running)
        attrs = {
            "plan": self.spec.plan,
            "device": self.spec.device or "",
            "mode": self.mode,
            "spec": self.spec.to_dict(),
            "out": str(self.out),
        }
        summary.write(self.out, table, attrs)
        self._written = time.monotonic()
        return table

    def _plots(self, table: list[dict[str, Any]]) -> list[Path]:
        names = list(self.metrics) if self.metrics is not None else default_metrics(table)
        written = []
        if names:
            (self.out / "plots").mkdir(exist_ok=True)
        for metric in names:
            path = self.out / "plots" / self.figures.filename(f"{metric.replace('/', '_')}.png")
            try:
                figure = plot_metric(table, metric, grid=self.spec.samples is None)
                figure.savefig(path, dpi=self.figures.dpi, bbox_inches="tight")
            except Exception:
                log.exception("plot of %s failed; the summary is unaffected", metric)
                continue
            written.append(path)
        return written

    def _emit(self, name: str, doc: Mapping[str, Any]) -> None:
        for observer in self.observers:
            try:
                observer(name, doc)
            except Exception:  # a display or monitor never breaks the sweep
                log.exception("sweep observer %r failed on %s", observer, name)


def local_cluster(
    n_workers: int,
    *,
    processes: bool = True,
    resources: Mapping[str, float] | None = None,
    dashboard: bool | str | None = True,
) -> Any:
    """The ``LocalCluster`` of a sweep: one single-threaded worker per point at a time, with
    :data:`LOCAL_CONFIG`; worker processes leave the signals to the sweep (``dask_setup`` of
    :mod:`spinlab.sweeps.worker`); the dashboard on ``dashboard``, an address from
    :func:`dashboard_address` (True: :data:`DASHBOARD`; False: none)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CONFIG):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=processes,
            resources=dict(resources) if resources else None,
            dashboard_address=DASHBOARD if dashboard is True else dashboard or None,
            silence_logs=logging.ERROR,
            preload=["spinlab.sweeps.worker"] if processes else None,
        )


def dashboard_address(value: bool | str | None) -> str | None:
    """Where the dashboard listens: True is :data:`DASHBOARD`, ``[HOST:]PORT`` that (no host:
    127.0.0.1; port 0 picks one), False/None/``off`` none. Another host than loopback exposes
    the cluster's identity, workers and logs to the network, unencrypted: it is warned about."""
    from spinlab.monitoring.addresses import is_loopback

    if value is True:
        return DASHBOARD
    if not value or str(value).strip().lower() == "off":
        return None
    m = _DASHBOARD_RE.match(str(value).strip())
    if not m or not 0 <= int(m["port"]) < 65536:
        raise ConfigError(
            f"--dashboard {value!r} must be [HOST:]PORT, e.g. 8787 or 127.0.0.1:8787 "
            "(port 0 picks a free one), or off"
        )
    host = m["host"] or "127.0.0.1"
    if not is_loopback(host.strip("[]")):
        log.warning(
            "the Dask dashboard binds to %s: its identity, worker and log pages are readable "
            "from other machines; use 127.0.0.1:PORT (and an SSH tunnel) unless you mean it",
            host,
        )
    return f"{host}:{m['port']}"


def _task_error(exc: BaseException) -> str:
    """A task's error as one line (a worker that kept dying is said so)."""
    if type(exc).__name__ == "KilledWorker":
        return (
            "KilledWorker: the workers running this point died each time (out of memory, or "
            "killed); see the workers' logs"
        )
    return f"{type(exc).__name__}: {exc}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.debug("closing %r failed", fn, exc_info=True)


__all__ = [
    "run_sweep",
    "local_cluster",
    "dashboard_address",
    "SweepResult",
    "Observer",
    "LOCAL_CONFIG",
    "DASHBOARD",
]
