"""A twin trained over several fields, scored at fields it never saw; prints one JSON object per line.

Issue 21's check of the field as a twin condition, through the command line a user types:

    spinlab twin train --device DEV --field-T 0.2,0.3,0.4 --dt-s 2e-7 --amplitude-V 0.5 \\
        --hold-s 2e-7,2e-6 --hidden 32 --target-nrmse 0.1 --max-duration 2e-2 --out twin.pt
    spinlab twin eval twin.pt --device DEV --field-T 0.25,0.35 --hold-s 2e-7,2e-6 \\
        --amplitude-V 0.5 --drives 10 --repeats 4 --target-nrmse 0.15

(the digits twin's drive family and size, see docs/twin.md). The twin's conditions are
``bias_A`` (held at the device's operating bias) and ``field_T``. The device is ``sim:vortex``
by default, whose threshold moves with the field (5 mA x (1 + 0.5 /T x B)), so the twin must
learn the field's effect; ``--device bench:emulated`` sets the field with its emulated magnet
(closed-loop, the gaussmeter's reading in the run files) and scores the twin against the bench.

``twin_field``  per seed: training (steps, stop reason, device time, wall seconds, held-out
    NRMSE at the trained fields) and the scoring at the untrained fields: the NRMSE against the
    device's 4-shot mean (target <= 0.15), per field, and with the mean's own noise removed.
``twin_field_summary``  mean and worst NRMSE over the seeds, and whether every seed met 0.15.

    python benchmarks/bench_twin_field.py                  # 3 seeds, ~2 min on 2 busy cores
    python benchmarks/bench_twin_field.py --seeds 1 --device "bench:emulated"
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab.cli import app  # noqa: E402

TARGET_NRMSE = 0.15
DRIVES = ["--dt-s", "2e-7", "--amplitude-V", "0.5", "--hold-s", "2e-7,2e-6"]
EVAL_DRIVES = ["--hold-s", "2e-7,2e-6", "--amplitude-V", "0.5", "--drives", "10", "--repeats", "4"]


def emit(**values) -> None:
    print(json.dumps(values, sort_keys=True), flush=True)


def spinlab(*args: str) -> dict:
    """One command in this process, as typed; its ``--json`` summary."""
    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exit_code != 0:
        raise SystemExit(f"spinlab {' '.join(args)} failed: {result.output.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def twin_field(device: str, trained: str, scored: str, seed: int, runs: Path, hidden: int) -> dict:
    out = runs / f"twin-{seed}.pt"
    start = time.perf_counter()
    train = spinlab(
        "twin",
        "train",
        "--device",
        device,
        "--field-T",
        trained,
        *DRIVES,
        "--hidden",
        str(hidden),
        "--target-nrmse",
        "0.1",
        "--max-duration",
        "2e-2",
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--runs-dir",
        str(runs),
    )
    train_s = time.perf_counter() - start
    scored_at = spinlab(
        "twin",
        "eval",
        str(out),
        "--device",
        device,
        "--field-T",
        scored,
        *EVAL_DRIVES,
        "--target-nrmse",
        str(TARGET_NRMSE),
        "--seed",
        str(1000 + seed),
        "--runs-dir",
        str(runs),
    )
    return {
        "device": device,
        "seed": seed,
        "trained_fields_T": [float(v) for v in trained.split(",")],
        "scored_fields_T": [float(v) for v in scored.split(",")],
        "train_steps": train["steps"],
        "train_stop_reason": train["stop_reason"],
        "train_device_time_s": train["device_time_s"],
        "train_wall_s": round(train_s, 1),
        "train_heldout_nrmse": train["best_nrmse"],
        "nrmse": scored_at["nrmse"],
        "nrmse_noise_corrected": scored_at["nrmse_noise_corrected"],
        "noise_floor_mean": scored_at["noise_floor_mean"],
        "nrmse_per_field": {str(e["field_T"]): e["nrmse"] for e in scored_at["per_condition"]},
        "target_nrmse": TARGET_NRMSE,
        "met": scored_at["nrmse"] <= TARGET_NRMSE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex")
    parser.add_argument("--trained", default="0.2,0.3,0.4", help="fields of the training (T)")
    parser.add_argument("--scored", default="0.25,0.35", help="fields it is scored at (T)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    emit(kind="env", python=platform.python_version(), torch=torch.__version__, machine=platform.machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            row = twin_field(args.device, args.trained, args.scored, seed, Path(tmp), args.hidden)
            emit(kind="twin_field", **row)
            rows.append(row)
    scores = [r["nrmse"] for r in rows]
    emit(
        kind="twin_field_summary",
        device=args.device,
        seeds=len(rows),
        nrmse_mean=sum(scores) / len(scores),
        nrmse_worst=max(scores),
        target_nrmse=TARGET_NRMSE,
        all_met=all(r["met"] for r in rows),
    )


if __name__ == "__main__":
    main()
