"""The long fuzz campaign: every fuzz target on random inputs, 100,000 of them in all.

    .venv/bin/python -m pytest -m slow tests/test_fuzz_100k.py -s

runs each fuzz module (``tests/test_fuzz_*.py``) in a child pytest under the hypothesis profile
``fuzz`` (random, not derandomised; see ``tests/conftest.py``), with 100,000 / (number of
targets) inputs per target, and prints one JSON line per target (inputs, seconds) and a total
with the child's peak RSS. ``SPINLAB_FUZZ_SEED=N`` replays a campaign; the child's memory is
capped so that an input which makes spinlab allocate without bound fails as MemoryError instead
of exhausting the machine, and its peak RSS must stay below 1 GB: every hostile file is small,
so a loader that believes what a file declares shows up here.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import is_hypothesis_test

TESTS = Path(__file__).resolve().parent
MODULES = sorted(p.stem for p in TESTS.glob("test_fuzz_*.py") if p.stem != Path(__file__).stem)
TOTAL_INPUTS = 100_000
MEMORY_CAP_BYTES = 8 << 30
MAX_PEAK_RSS_BYTES = 1 << 30


def fuzz_targets() -> list[str]:
    return [
        f"tests/{name}.py::{attr}"
        for name in MODULES
        for attr, fn in vars(importlib.import_module(name)).items()
        if attr.startswith("test_") and is_hypothesis_test(fn)
    ]


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


@pytest.mark.slow
def test_100k_fuzz_inputs_find_no_crash_but_specific_spinlab_errors():
    targets = fuzz_targets()
    per_target = math.ceil(TOTAL_INPUTS / len(targets))
    seed = int(os.environ.get("SPINLAB_FUZZ_SEED", random.randrange(2**32)))
    env = {**os.environ, "SPINLAB_FUZZ_PROFILE": "fuzz", "SPINLAB_FUZZ_EXAMPLES": str(per_target)}
    start = time.monotonic()
    children = []
    for module in MODULES:  # one child per module: what one module's loaders keep does not add up
        mine = [t for t in targets if t.startswith(f"tests/{module}.py::")]
        children.append(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--hypothesis-show-statistics",
                    f"--hypothesis-seed={seed}",
                    *mine,
                ],
                cwd=TESTS.parent,
                env=env,
                capture_output=True,
                text=True,
                preexec_fn=_cap_memory,
            )
        )
    seconds = time.monotonic() - start
    stdout = "".join(child.stdout for child in children)
    stats = re.findall(
        r"^(tests/\S+):\n\n  - during generate phase \(([\d.]+) seconds\):\n"
        r"(?:.*\n)*?    - (\d+) passing, (\d+) failing",
        stdout,
        re.M,
    )
    for target, secs, passing, failing in stats:
        print(
            json.dumps(
                {
                    "target": target,
                    "inputs": int(passing) + int(failing),
                    "failing": int(failing),
                    "seconds": float(secs),
                }
            )
        )
    inputs = sum(int(p) + int(f) for _, _, p, f in stats)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child, in bytes
    print(
        json.dumps(
            {
                "targets": len(targets),
                "inputs": inputs,
                "seconds": round(seconds, 1),
                "seed": seed,
                "peak_rss_MB": round(peak / 1e6),
                "results": [c.stdout.strip().splitlines()[-1] for c in children],
            }
        )
    )
    for child in children:
        assert child.returncode == 0, child.stdout[-5000:] + child.stderr[-2000:]
    assert len(stats) == len(targets) and inputs >= TOTAL_INPUTS
    assert peak < MAX_PEAK_RSS_BYTES, f"peak RSS {peak / 1e6:.0f} MB"
