"""Does monitoring slow acquisition? The same sim:vortex acquisition with 0, 10 and 10 watchers
of which one has stopped reading.

Each step of a plan run by the engine: one batch of random drives through ``sim:vortex``,
recorded (journal + run file, durable per step) -> a waveform preview and progress. Subscribers are
separate processes on loopback (this file re-run with ``--subscriber``) that validate every
message with :class:`spinlab.monitoring.Subscriber`; the stalled one subscribes and never reads.
Scenarios are interleaved and repeated; we report medians of wall time and also of the
acquisition thread's own CPU time, which is what monitoring adds to the acquisition path
itself (wall time on a shared 2-core machine also counts CPU the watchers take from it).

Prints JSON lines: per scenario wall time of the acquisition loop, ratio to the 0-subscriber
run (target within 5 % of 1), ratio to a run without any monitor, data completeness (rows and
checksum of run.h5 against what was acquired), publisher drops, and what each watcher got.
On a small shared machine the watchers compete with acquisition for CPU; their CPU time is
reported so the ratio can be read honestly.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def subscriber_main(endpoint: str, stall: bool, timeout_s: float) -> None:
    """A watcher process: read and validate until run.stop, then print what it saw."""
    from spinlab.monitoring import Subscriber

    sub = Subscriber(endpoint)
    cpu0 = time.process_time()  # what reading costs, without interpreter start-up and imports
    if stall:  # subscribed, never reads: its buffers fill and the publisher must not care
        time.sleep(timeout_s)
        return
    got_stop, deadline = False, time.monotonic() + timeout_s
    while not got_stop and time.monotonic() < deadline:
        # like a live view: wake up ~10 times a second and take the whole batch
        time.sleep(0.1)
        got_stop = any(m.topic == "run.stop" for m in sub.drain())
    print(json.dumps({"received": sub.received, "missed": sub.missed, "rejected": sub.rejected,
                      "got_stop": got_stop, "cpu_s": round(time.process_time() - cpu0, 3)}), flush=True)
    sub.close()


def start_subscribers(endpoint: str, n: int, stalled: int) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    procs = []
    for i in range(n):
        args = [sys.executable, __file__, "--subscriber", endpoint]
        if i < stalled:
            args.append("--stall")
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env))
    return procs


def acquisition(root: Path, steps: int, batch: int, samples: int, monitor: bool,
                n_subs: int, stalled: int, seed: int) -> dict:
    import spinlab
    from spinlab.engine import Plan, RunEngine
    from spinlab.monitoring.documents import MonitorPublisher

    rng = np.random.default_rng(seed)
    drives = [spinlab.Waveform(rng.uniform(-0.3, 0.3, (batch, samples)), 100e-9) for _ in range(steps)]
    timing: dict[str, float] = {"checksum": 0.0, "publish_s": 0.0}

    def body(ctx):
        t0, c0, p0_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for i, drive in enumerate(drives):
            data = ctx.measure("responses", lambda dev, d=drive: {
                "responses": dev.respond(d, {"bias_A": 7.5e-3}).samples})
            timing["checksum"] += float(data["responses"].sum())
            p0 = time.perf_counter()
            ctx.preview("response", spinlab.Waveform(data["responses"][0], drive.dt_s))
            ctx.progress(i + 1, steps)
            timing["publish_s"] += time.perf_counter() - p0
        timing["loop_s"] = time.perf_counter() - t0
        timing["thread_cpu_s"] = time.thread_time() - c0
        timing["process_cpu_s"] = time.process_time() - p0_cpu
        timing["t_end"] = time.perf_counter()

    with spinlab.open_device(f"sim:vortex?seed={seed}") as dev:
        dev.respond(drives[0])  # compile the numba kernel outside the timing
        publisher = MonitorPublisher("tcp://127.0.0.1:0") if monitor else None
        procs = []
        if publisher is not None and n_subs:
            procs = start_subscribers(publisher.endpoint, n_subs, stalled)
            deadline = time.monotonic() + 60
            while publisher.publisher.stats()["subscriptions"] < n_subs and time.monotonic() < deadline:
                time.sleep(0.01)
        plan = Plan("bench-monitoring", {"steps": steps, "batch": batch, "samples": samples}, body)
        result = RunEngine(root).run(plan, dev, seed=seed, subscribers=[publisher] if publisher else [])
        close_s = time.perf_counter() - timing["t_end"]
        stats = publisher.publisher.stats() if publisher else {}
        if publisher is not None:
            publisher.close()
    watchers = []
    for proc in procs:
        if proc.args[-1] == "--stall":
            proc.kill()
            proc.wait()
            continue
        out, _ = proc.communicate(timeout=60)
        watchers.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": "no output"})
    with h5py.File(result.run_file) as f:
        saved = f["responses"][()]
        status = f.attrs["status"]
    complete = saved.shape == (steps * batch, samples) and np.isclose(saved.sum(), timing["checksum"], rtol=1e-12)
    return {"loop_s": timing["loop_s"], "thread_cpu_s": timing["thread_cpu_s"],
            "process_cpu_s": timing["process_cpu_s"], "close_s": close_s,
            "publish_s": timing["publish_s"], "complete": bool(complete),
            "status": status, "rows": int(saved.shape[0]), "expected_rows": steps * batch,
            "dropped": stats.get("dropped", 0), "sent": stats.get("sent", 0),
            "published": stats.get("published", 0), "watchers": watchers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriber", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--stall", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.subscriber:
        subscriber_main(args.subscriber, args.stall, timeout_s=120.0)
        return

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    scenarios = {
        "no_monitor": dict(monitor=False, n_subs=0, stalled=0),
        "subscribers_0": dict(monitor=True, n_subs=0, stalled=0),
        f"subscribers_{args.subscribers}": dict(monitor=True, n_subs=args.subscribers, stalled=0),
        f"subscribers_{args.subscribers}_1_stalled": dict(monitor=True, n_subs=args.subscribers, stalled=1),
    }
    results: dict[str, list[dict]] = {name: [] for name in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, kw in scenarios.items():  # interleaved so drift hits every scenario alike
                results[name].append(acquisition(Path(tmp) / f"{name}-{rep}", args.steps, args.batch,
                                                 args.samples, seed=args.seed, **kw))
    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base, bare = med("subscribers_0", "loop_s"), med("no_monitor", "loop_s")
    for name, runs in results.items():
        loop = med(name, "loop_s")
        watchers = [w for r in runs for w in r["watchers"]]
        print(json.dumps({
            "metric": "monitoring_overhead", "scenario": name, "steps": args.steps,
            "batch": args.batch, "samples": args.samples, "repeats": args.repeats,
            "loop_s_median": round(loop, 4), "loop_s_all": [round(r["loop_s"], 4) for r in runs],
            "ratio_vs_0_subscribers": round(loop / base, 4),
            "ratio_vs_no_monitor": round(loop / bare, 4),
            "acq_thread_cpu_s_median": round(med(name, "thread_cpu_s"), 4),
            "acq_thread_cpu_ratio_vs_0_subscribers": round(med(name, "thread_cpu_s") / med("subscribers_0", "thread_cpu_s"), 4),
            "process_cpu_s_median": round(med(name, "process_cpu_s"), 4),
            "publish_s_median": round(statistics.median(r["publish_s"] for r in runs), 4),
            "close_s_max": round(max(r["close_s"] for r in runs), 3),
            "data_complete": all(r["complete"] for r in runs),
            "rows": runs[-1]["rows"], "expected_rows": runs[-1]["expected_rows"],
            "publisher_published": sum(r["published"] for r in runs),
            "publisher_dropped": sum(r["dropped"] for r in runs),
            "watchers_reading": len(watchers),
            "watchers_got_stop": sum(bool(w.get("got_stop")) for w in watchers),
            "watcher_missed_total": sum(w.get("missed", 0) for w in watchers),
            "watcher_rejected_total": sum(w.get("rejected", 0) for w in watchers),
            "watcher_cpu_s_reading_total": round(sum(w.get("cpu_s", 0.0) for w in watchers), 2),
            "cpus": os.cpu_count(),
        }))


if __name__ == "__main__":
    main()
