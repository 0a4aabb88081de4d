"""Spoken digits for voices the readout never heard: leave-one-speaker-out, enrolment, standard split.

    python benchmarks/bench_speaker_independence.py                      # sim:vortex, all five speakers
    python benchmarks/bench_speaker_independence.py --speakers lucas --no-standard

For each FSDD speaker in turn, `spinlab run spoken-digits --split speaker` trains on the other
speakers (settings inside are chosen by speaker-grouped CV over the training speakers only) and
scores the held-out one, next to the no-device baselines and the pooled-MFCC reference of the
same run. The saved readout is then enrolled with that speaker's utterances 5-9 (5 per digit)
and scored on utterances 10-49 (enrolment re-uses the stored training states; only the 50 new
utterances go through the device). Prints one JSON line per speaker, one for the standard split
and a summary line ``{"metric": "speaker_independence", "loso_mean": ..., "mfcc_reference_mean":
..., "enrolled_mean": ..., "standard_accuracy": ...}`` (targets: LOSO >= 0.80 and above the
MFCC reference, enrolled >= 0.95, standard >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from spinlab import open_device  # noqa: E402
from spinlab.engine import RunEngine  # noqa: E402
from spinlab.protocols import spoken_digits  # noqa: E402
from spinlab.speech.audio import list_fsdd  # noqa: E402
from spinlab.speech.readout import load_readout  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"
BASELINES = ("baseline_accuracy", "drive_baseline_accuracy", "mfcc_reference_accuracy")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex", help="device address (default sim:vortex)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    parser.add_argument(
        "--speakers", default=None, help="comma-separated speakers to hold out (default: all)"
    )
    parser.add_argument("--cache", default=str(ROOT / "runs" / ".cache"), help="feature cache folder")
    parser.add_argument("--no-standard", action="store_true", help="skip the standard-split run")
    parser.add_argument("--no-loso", action="store_true", help="only the standard-split run")
    args = parser.parse_args(argv)

    utterances = list_fsdd(args.data)
    speakers = args.speakers.split(",") if args.speakers else sorted({u.speaker for u in utterances})
    speakers = [] if args.no_loso else speakers
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for speaker in speakers:
            plan = spoken_digits.plan(
                data_dir=args.data, split="speaker", test_speaker=speaker, feature_cache_dir=args.cache
            )
            summary, run_dir = _run(args.device, plan, Path(tmp))
            enrolled = _enrolled_accuracy(
                args.device, run_dir, [u for u in utterances if u.speaker == speaker]
            )
            row = {
                "metric": "loso",
                "device": args.device,
                "speaker": speaker,
                "accuracy": summary["accuracy"],
                **{k: summary[k] for k in BASELINES},
                "enrolled_accuracy": enrolled,
                "alpha": summary["alpha"],
                "wall_s": summary["wall_s"],
            }
            rows.append(row)
            _emit(row)
        standard = None
        if not args.no_standard:
            plan = spoken_digits.plan(data_dir=args.data, feature_cache_dir=args.cache)
            summary, _ = _run(args.device, plan, Path(tmp))
            standard = summary["accuracy"]
            _emit(
                {
                    "metric": "standard_split",
                    "device": args.device,
                    "accuracy": standard,
                    **{k: summary[k] for k in BASELINES},
                    "wall_s": summary["wall_s"],
                }
            )
    mean = lambda key: float(np.mean([r[key] for r in rows])) if rows else None  # noqa: E731
    _emit(
        {
            "metric": "speaker_independence",
            "device": args.device,
            "speakers": speakers,
            "loso_mean": mean("accuracy"),
            "mfcc_reference_mean": mean("mfcc_reference_accuracy"),
            "baseline_mean": mean("baseline_accuracy"),
            "drive_baseline_mean": mean("drive_baseline_accuracy"),
            "enrolled_mean": mean("enrolled_accuracy"),
            "standard_accuracy": standard,
            "targets": {"loso_mean": 0.80, "enrolled_mean": 0.95, "standard_accuracy": 0.97},
        }
    )


def _run(address: str, plan, root: Path) -> tuple[dict, Path]:
    t0 = time.perf_counter()
    result = RunEngine(root / "runs").run(plan, address)
    return {**result.summary, "wall_s": time.perf_counter() - t0}, result.path


def _enrolled_accuracy(address: str, run_dir: Path, own: list) -> float:
    """Enrol utterances 5-9 of the held-out speaker, score 10-49."""
    readout = load_readout(run_dir)
    enrol = [u for u in own if 5 <= u.index <= 9]
    test = [u for u in own if u.index >= 10]
    with open_device(address) as device:
        adapted = readout.enrol(
            device, [u.load() for u in enrol], [u.digit for u in enrol], speaker=own[0].speaker
        )
        hits = [r.index == u.digit for r, u in zip(adapted.recognise(device, [u.load() for u in test]), test)]
    return float(np.mean(hits))


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
