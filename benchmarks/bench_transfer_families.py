"""Binary vs ASCII transfers of the second instrument families on the emulated bench.

Prints JSON lines; the AWG rows (:func:`awg_rows`):
  {"metric": "awg_upload", "family": "tektronix-awg5200", "binary_s": ..., "ascii_s": ..., "ratio": ...}
  {"metric": "awg_round_trip", "family": "tektronix-awg5200", "binary_s": ..., "ascii_s": ..., "ratio": ...}

The AWG5200 takes a waveform as one IEEE float32 block (``WLISt:WAVeform:DATA "w",0,N,#...``,
4 bytes a sample) or as comma-separated numbers (about 12 bytes and a formatted, then parsed,
number a sample). ``awg_upload`` times ``upload_arb`` against ``upload_arb_ascii`` of the same
samples (each through the whole stack: driver, pyvisa, the in-process emulator parsing it);
``awg_round_trip`` adds the read-back of the waveform (``WLISt:WAVeform:DATA?``, a float32 block:
the instrument has no ASCII read-back) that ``verify=True`` does. Best of ``--repeats``.
Target: binary >= 10x faster than ASCII.

Usage: ``python benchmarks/bench_transfer_families.py [--samples N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best(action, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - t)
    return best


def awg_rows(samples: int = 1_000_000, repeats: int = 3) -> list[dict]:
    """Binary vs ASCII upload (and round trip) of ``samples`` on the emulated AWG5200."""
    from spinlab.instruments.bench import open_bench

    samples_V = np.random.default_rng(0).uniform(-0.3, 0.3, samples)
    rate = 1e8
    rows = []
    with open_bench("emulated", awg="tektronix-awg5200") as bench:
        awg = bench.awg
        for metric, verify in (("awg_upload", False), ("awg_round_trip", True)):
            binary = _best(lambda v=verify: awg.upload_arb("BENCH", samples_V, rate, verify=v), repeats)
            ascii_ = _best(lambda v=verify: awg.upload_arb_ascii("BENCH", samples_V, rate, verify=v), repeats)
            rows.append(
                {
                    "metric": metric,
                    "family": "tektronix-awg5200",
                    "samples": samples,
                    "binary_s": binary,
                    "ascii_s": ascii_,
                    "ratio": ascii_ / binary,
                    "target_ratio": 10.0,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for row in awg_rows(args.samples, args.repeats):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
