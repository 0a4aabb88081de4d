"""What recording a run in the catalog costs the run (target: under 1 % of its wall time).

One default characterisation on sim:vortex (about 10 s here), in a fresh process so that the
catalog's first-use costs count (importing SQLAlchemy, creating the catalog and its tables): the
numba kernels are compiled first by a run with the catalog off, then the measured run records
itself through the engine's own :class:`~spinlab.catalog.rundirs.Recorder`, wrapped so the time
its calls take on the run's thread is measured (what the run waits for), and the wall and CPU
time its writes take in the catalog's thread beside the run (the CPU share bounds what they
can take from the run through the interpreter lock). Paired runs with the catalog on and off
follow (medians of the paired ratios), which on a shared machine swing by more than the effect,
so they are reported, not judged. PostgreSQL too when ``--postgres URL`` or
``SPINLAB_TEST_POSTGRES`` names a server. Prints JSON lines.
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

CHILD = r"""
import json, sys, time
from pathlib import Path
from spinlab.catalog.rundirs import Recorder, settle
from spinlab.engine import RunEngine
from spinlab.protocols import characterize

url, root, pairs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

class Timed(Recorder):
    run_thread_s = writes_s = writes_cpu_s = 0.0
    def __call__(self, name, doc):
        t = time.perf_counter()
        super().__call__(name, doc)
        Timed.run_thread_s += time.perf_counter() - t
    def _write(self, row):
        t, c = time.perf_counter(), time.thread_time()
        super()._write(row)
        Timed.writes_s += time.perf_counter() - t
        Timed.writes_cpu_s += time.thread_time() - c

RunEngine(root / "warm", catalog=False).run(characterize.plan(bias_points=6, step_repeats=64), "sim:vortex")
recorder = Timed(url)
t = time.perf_counter()
engine = RunEngine(root / "runs", catalog=False)
result = engine.run(characterize.plan(), "sim:vortex", subscribers=[recorder])
wall = time.perf_counter() - t
settle()
assert not recorder.failed and result.status == "completed"
first = {"wall_s": wall, "run_thread_s": Timed.run_thread_s}
first.update(writes_s=Timed.writes_s, writes_cpu_s=Timed.writes_cpu_s)
Timed.run_thread_s = Timed.writes_s = Timed.writes_cpu_s = 0.0
recorder = Timed(url)
t = time.perf_counter()
engine.run(characterize.plan(), "sim:vortex", subscribers=[recorder])
wall = time.perf_counter() - t
settle()
warm = {"wall_s": wall, "run_thread_s": Timed.run_thread_s}
warm.update(writes_s=Timed.writes_s, writes_cpu_s=Timed.writes_cpu_s)
ratios = []
for i in range(pairs):
    walls = {}
    for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
        t = time.perf_counter()
        engine = RunEngine(root / f"ab-{mode}", catalog=url if mode == "on" else False)
        engine.run(characterize.plan(), "sim:vortex")
        walls[mode] = time.perf_counter() - t
    ratios.append(walls["on"] / walls["off"])
print(json.dumps({"first": first, "warm": warm, "ratios": ratios}))
"""


def measure(backend: str, url: str, pairs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = url.format(tmp=tmp)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, url, tmp, str(pairs)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"the measured run failed:\n{done.stderr}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    line = {"bench": "catalog_overhead", "backend": backend, "run": "characterize (defaults) on sim:vortex"}
    for when, what in (("first", "first catalog use in the process"), ("warm", "the next run")):
        m = got[when]
        line[when] = {
            "what": what,
            "run_wall_s": round(m["wall_s"], 3),
            "waited_by_run_s": round(m["run_thread_s"], 4),
            "overhead_pct": round(100 * m["run_thread_s"] / m["wall_s"], 3),
            "catalog_writes_s": round(m["writes_s"], 4),
            "catalog_writes_cpu_s": round(m["writes_cpu_s"], 4),
            "catalog_cpu_pct_of_run": round(100 * m["writes_cpu_s"] / m["wall_s"], 3),
        }
    ratios = got["ratios"]
    line["paired_on_off_ratio_median"] = round(statistics.median(ratios), 4) if ratios else None
    line["pairs"] = len(ratios)
    line["target_pct"] = 1.0
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", type=int, default=4, help="catalog on/off run pairs after the measured run"
    )
    parser.add_argument(
        "--postgres", default=os.environ.get("SPINLAB_TEST_POSTGRES"), help="a PostgreSQL URL"
    )
    args = parser.parse_args()
    backends = [("sqlite", "sqlite:///{tmp}/catalog.sqlite")]
    if args.postgres:
        backends.append(("postgresql", args.postgres))
    for backend, url in backends:
        t = time.perf_counter()
        line = measure(backend, url, args.pairs)
        line["bench_s"] = round(time.perf_counter() - t, 1)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
