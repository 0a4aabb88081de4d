"""How a two-input skyrmion twin generalises; prints one JSON object per line.

The data is MuMax3's ``one_skyrmion_ku_dmi_train`` table (anisotropy Ku1 at 4 GHz and the DMI
constant at 0.4 GHz, each sine period with a random amplitude); the twin takes Ku1 as its drive
and the DMI as a condition, with ``spinlab twin train``'s MuMax3 defaults (k = 2, 2 x 64 tanh,
50 segments x 20 points, validation target 0.02, ``--max-steps`` and ``--max-wall-s`` bound).
Nothing is tuned on a test span: the best weights are picked on a validation span inside the
training data.

``twin_heldout``  train on the first 80 % of the table (its last 3,000 samples the validation
    span), score free-running on the last 20 %: the NRMSE and the dominant-frequency error.
``twin_extrapolation``  for ``dmi`` and ``ku``: cut the table into the input's modulation
    periods (2.5 ns for DMI, 250 ps for Ku1), train on the periods whose amplitude is at most
    ``--inner`` of the largest (so the trained range is the inner part), and score free-running
    on every run of periods beyond it, where the input leaves the trained range (``ku`` also
    reports the runs at fixed-ish DMI: within 25 % of its amplitude). Held-out inner periods are
    the control: the same twin inside its range. Every scored run starts free from its first
    measured samples and is one or more periods long (Ku: 250 ps each, so those runs are short).

    python benchmarks/bench_twin_extrapolation.py                 # both (~10 min on 2 cores)
    python benchmarks/bench_twin_extrapolation.py --only dmi --max-wall-s 120 --dmi-as drive
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab.protocols.twin_eval import dominant_frequency  # noqa: E402
from spinlab.twin.evaluation import predict, trajectory_nrmse  # noqa: E402
from spinlab.twin.model import TwinArchitecture, build_model  # noqa: E402
from spinlab.twin.mumax import MumaxSplit, load_mumax_table, mumax_series  # noqa: E402
from spinlab.twin.train import TrainConfig, train_offline  # noqa: E402
from spinlab.twin.trajectory import Trajectory, fit_normalisation  # noqa: E402

TABLE = ROOT / ".." / "shared" / "datasets" / "mumax3-skyrmion" / "one_skyrmion_ku_dmi_train" / "table.txt"
SPLIT = MumaxSplit(drives=("Ku1.region100",), conditions=("Dind.region100",), every=1, discard=1500)
#: ``--dmi-as drive``: the DMI as a second drive (at every delay, interpolated) instead
SPLIT_DMI_DRIVE = MumaxSplit(drives=("Ku1.region100", "Dind.region100"), every=1, discard=1500)
DMI = "dmi_J_m2"
PERIODS = {"dmi": 2.5e-9, "ku": 2.5e-10}  # modulation periods of the two inputs


def emit(**values) -> None:
    print(json.dumps(values, sort_keys=True), flush=True)


def train(spans: list[Trajectory], validation: list[Trajectory], args) -> tuple[object, dict]:
    split = split_for(args)
    arch = TwinArchitecture(drive_names=split.drives, condition_names=(DMI,) if split.conditions else ())
    model = build_model(arch, fit_normalisation(spans, arch.condition_names), seed=args.seed)
    config = TrainConfig(
        max_steps=args.max_steps,
        validate_every=250,
        target_nrmse=0.02,
        max_wall_s=args.max_wall_s,
        seed=args.seed,
    )
    result = train_offline(model, spans, validation, config)
    return model, {
        "best_validation_nrmse": result.best_nrmse,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "train_wall_s": round(result.wall_s, 1),
    }


def split_for(args) -> MumaxSplit:
    return SPLIT_DMI_DRIVE if args.dmi_as == "drive" else SPLIT


def dmi_of(t: Trajectory) -> np.ndarray:
    return t.conditions[DMI] if DMI in t.conditions else t.drives[1]


def heldout(series: Trajectory, table_rows: int, args) -> None:
    """First 80 % of the table for training (validation: its last 3,000 samples), last 20 % test."""
    cut = int(0.8 * table_rows) - SPLIT.discard
    fit, val, test = series.span(0, cut - 3000), series.span(cut - 3000, cut), series.span(cut, series.n)
    model, info = train([fit], [val], args)
    pred = predict(model, [test])[0][model.arch.history_samples :]
    truth = test.response[model.arch.history_samples :]
    f_true, f_twin = dominant_frequency(truth, test.dt_s), dominant_frequency(pred, test.dt_s)
    emit(
        bench="twin_heldout",
        test="last 20 % of the table",
        dmi_as=args.dmi_as,
        test_points=int(truth.size),
        nrmse=trajectory_nrmse(model, [test]),
        dominant_frequency_Hz=f_true,
        twin_dominant_frequency_Hz=f_twin,
        frequency_error=abs(f_twin - f_true) / f_true,
        **info,
    )


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges of consecutive True windows."""
    out, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def extrapolation(series: Trajectory, which: str, args) -> None:
    window = int(round(PERIODS[which] / series.dt_s))
    n_win = series.n // window
    values = series.drives[0] if which == "ku" else dmi_of(series)
    centre = 0.5 * (values.min() + values.max())
    amp = np.array([np.abs(values[i * window : (i + 1) * window] - centre).max() for i in range(n_win)])
    inner = amp <= args.inner * amp.max()
    # inner periods: 1 in 6 validation, 1 in 6 the in-range control, the rest training
    ranks = np.cumsum(inner) - 1
    role = np.where(
        ~inner, "outer", np.where(ranks % 6 == 0, "val", np.where(ranks % 6 == 3, "control", "train"))
    )

    def spans(kind: str) -> list[Trajectory]:
        return [series.span(a * window, b * window) for a, b in runs(role == kind)]

    model, info = train(spans("train"), spans("val"), args)
    trained = [float(centre - amp[inner].max()), float(centre + amp[inner].max())]
    outer = spans("outer")
    result = {
        "bench": "twin_extrapolation",
        "input": which,
        "inner_fraction": args.inner,
        "dmi_as": args.dmi_as,
        "unit": "J/m3" if which == "ku" else "J/m2",
        "trained_range": trained,
        "full_range": [float(centre - amp.max()), float(centre + amp.max())],
        "train_points": int(sum(t.n for t in spans("train"))),
        "period_s": PERIODS[which],
        "nrmse_in_range": trajectory_nrmse(model, spans("control")),
        "nrmse_extrapolated": trajectory_nrmse(model, outer),
        "extrapolated_points": int(sum(t.n for t in outer)),
        "extrapolated_spans": len(outer),
        **info,
    }
    if which == "ku":  # the outer Ku runs at fixed-ish DMI
        dmi = dmi_of(series)
        d_centre, d_amp = 0.5 * (dmi.min() + dmi.max()), 0.5 * (dmi.max() - dmi.min())
        fixed = [t for t in outer if np.abs(dmi_of(t) - d_centre).max() <= 0.25 * d_amp]
        if fixed:
            result.update(
                nrmse_extrapolated_fixed_dmi=trajectory_nrmse(model, fixed), fixed_dmi_spans=len(fixed)
            )
    emit(**result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=["heldout", "dmi", "ku"],
        action="append",
        help="run only these parts (repeatable; default all)",
    )
    parser.add_argument(
        "--inner",
        type=float,
        default=0.6,
        help="training periods: amplitude at most this share of the largest",
    )
    parser.add_argument("--max-steps", type=int, default=12000)
    parser.add_argument("--max-wall-s", type=float, default=240.0, help="per training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument(
        "--dmi-as",
        choices=["condition", "drive"],
        default="condition",
        help="how the twin takes the DMI column",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = load_mumax_table(args.table)
    series, _ = mumax_series(table, split_for(args))
    emit(
        bench="twin_extrapolation_setup",
        table=str(args.table),
        samples=series.n,
        dt_s=series.dt_s,
        machine=platform.machine(),
        torch=torch.__version__,
    )
    start = time.perf_counter()
    for part in args.only or ["heldout", "dmi", "ku"]:
        if part == "heldout":
            heldout(series, table.time_s.size, args)
        else:
            extrapolation(series, part, args)
    emit(bench="twin_extrapolation_total", wall_s=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    main()
