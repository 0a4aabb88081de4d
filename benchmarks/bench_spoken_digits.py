"""Wall time and accuracy of the full spoken-digit protocol (2,500 FSDD utterances) per backend.

    python benchmarks/bench_spoken_digits.py                         # sim:vortex
    python benchmarks/bench_spoken_digits.py --twin runs/x/twin.pt   # sim:vortex and the twin
    python benchmarks/bench_spoken_digits.py --device bench:emulated --limit 300

Prints one JSON line per backend: ``{"metric": "spoken_digits_wall_s", "device": ..., "wall_s":
..., "device_s": ..., "respond_s": ..., "device_real_time_s": ..., "accuracy": ...}``.
``device_s`` is the protocol's device stage (building the drives, the device calls, the node
states); ``respond_s`` the time inside ``Device.respond`` alone, and ``device_real_time_s`` what
the same drives last on the physical device (samples x dt): the twin's target is
``respond_s <= device_real_time_s``. ``wall_over_device`` is what the protocol costs beyond the
device (target <= 1.5: the readout, baselines and features must not dwarf the device);
``load_average`` says how busy the machine was. The twin line also gives both ratios to the ``sim:vortex``
line. The features (Lyon, its speed-perturbed copies, the MFCCs of the reference) are computed
once up front (``features_s`` line) and cached, so each backend's wall time is the protocol a
user re-runs (``--cache DIR`` keeps them for the next benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab import open_device  # noqa: E402
from spinlab.engine import RunEngine  # noqa: E402
from spinlab.protocols import spoken_digits  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"


class _Timed:
    """Counts the seconds and drive samples that go through a device's ``respond``."""

    def __init__(self, device) -> None:
        self.seconds, self.samples, self.dt_s = 0.0, 0, 0.0
        inner = device.respond

        def respond(drive, conditions=None):
            t = time.perf_counter()
            try:
                return inner(drive, conditions)
            finally:
                self.seconds += time.perf_counter() - t
                self.samples += drive.samples.size
                self.dt_s = drive.dt_s

        device.respond = respond


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex", help="device address (default sim:vortex)")
    parser.add_argument("--twin", default=None, help="twin checkpoint path: also benchmark twin:PATH?noise=1")
    parser.add_argument("--torch-device", default="auto", help="where the twin computes (auto, cpu, cuda)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    parser.add_argument("--limit", type=int, default=None, help="stratified subset size (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the twin")
    parser.add_argument(
        "--cache", default=None, help="feature cache folder kept between runs (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        config = spoken_digits.SpokenDigitsConfig(
            data_dir=args.data, limit=args.limit, feature_cache_dir=str(cache)
        )
        train, test = spoken_digits.select_data(config, np.random.default_rng(0))
        t0 = time.perf_counter()
        spoken_digits.extract_features(config, train, test)
        _emit(
            {
                "metric": "spoken_digits_features_s",
                "features_s": time.perf_counter() - t0,
                "n_utterances": len(train) + len(test),
            }
        )
        addresses = [args.device]
        if args.twin:
            addresses.append(f"twin:{args.twin}?noise=1&torch_device={args.torch_device}")
        first = None
        for address in addresses:
            with open_device(address) as device:
                timed = _Timed(device)
                t0 = time.perf_counter()
                summary = (
                    RunEngine(Path(tmp) / "runs").run(spoken_digits.plan(config), device, seed=0).summary
                )
                wall = time.perf_counter() - t0
            real = timed.samples * timed.dt_s
            record = {
                "metric": "spoken_digits_wall_s",
                "device": address,
                "wall_s": wall,
                "device_s": summary["device_s"],
                "respond_s": timed.seconds,
                "drive_samples": timed.samples,
                "device_real_time_s": real,
                "respond_over_real_time": timed.seconds / real,
                "wall_over_device": wall / summary["device_s"],
                "target_wall_over_device": 1.5,
                "load_average": os.getloadavg(),
                "accuracy": summary["accuracy"],
                "accuracy_ci95": summary.get("accuracy_ci95"),
                "baseline_accuracy": summary["baseline_accuracy"],
                "drive_baseline_accuracy": summary["drive_baseline_accuracy"],
                "frame_accuracy": summary["frame_accuracy"],
                "n_utterances": summary["n_train"] + summary["n_test"],
            }
            if first is None:
                first = record
            else:
                record.update(
                    {
                        f"respond_over_{first['device']}": timed.seconds / first["respond_s"],
                        "accuracy_minus_first": summary["accuracy"] - first["accuracy"],
                    }
                )
            _emit(record)


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
