"""Wall time and accuracy of the full spoken-digit protocol (2,500 FSDD utterances) per backend.

    python benchmarks/bench_spoken_digits.py                         # sim:vortex
    python benchmarks/bench_spoken_digits.py --twin runs/x/twin.pt   # sim:vortex and the twin
    python benchmarks/bench_spoken_digits.py --device bench:emulated --limit 300

Prints one JSON line per backend: ``{"metric": "spoken_digits_wall_s", "device": ..., "wall_s":
..., "device_s": ..., "accuracy": ..., "baseline_accuracy": ..., "n_utterances": ...}``. Lyon
features are computed once up front (``features_s`` line) and cached, so each backend's wall time
is the protocol a user re-runs (target: < 3 minutes on sim:vortex and on the twin).
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

from spinlab.protocols.spoken_digits import SpokenDigitsConfig, run_spoken_digits, select_data  # noqa: E402
from spinlab import open_device  # noqa: E402
from spinlab.features import FeatureConfig, utterance_features  # noqa: E402
from spinlab.run import Run  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex", help="device address (default sim:vortex)")
    parser.add_argument("--twin", default=None, help="twin checkpoint path: also benchmark twin:PATH")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    parser.add_argument("--limit", type=int, default=None, help="stratified subset size (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the twin")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        config = SpokenDigitsConfig(data_dir=args.data, limit=args.limit, feature_cache_dir=str(cache))
        train, test = select_data(config, np.random.default_rng(config.seed))
        t0 = time.perf_counter()
        utterance_features(train + test, FeatureConfig(kind=config.feature_kind), cache)
        _emit({"metric": "spoken_digits_features_s", "features_s": time.perf_counter() - t0,
               "n_utterances": len(train) + len(test)})
        addresses = [args.device] + ([f"twin:{args.twin}"] if args.twin else [])
        for address in addresses:
            with open_device(address) as device:
                with Run("bench-spoken-digits", {}, root=Path(tmp) / "runs", device=device) as run:
                    t0 = time.perf_counter()
                    summary = run_spoken_digits(device, config, run)
                    wall = time.perf_counter() - t0
            _emit({"metric": "spoken_digits_wall_s", "device": address, "wall_s": wall,
                   "device_s": summary["device_s"], "accuracy": summary["accuracy"],
                   "baseline_accuracy": summary["baseline_accuracy"],
                   "frame_accuracy": summary["frame_accuracy"],
                   "n_utterances": summary["n_train"] + summary["n_test"], "target_s": 180.0})


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
