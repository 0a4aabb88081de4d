"""Binary vs ASCII transfers of the second instrument families on the emulated bench.

Prints JSON lines, one per family and metric:
  {"metric": "scope_read", "family": "rs-rtb2000", "samples": 1000000, "binary_s": ..., "ascii_s": ...,
   "ratio": ..., "target_ratio": 10}
  {"metric": "awg_upload", "family": "tektronix-awg5200", ...}, {"metric": "awg_round_trip", ...}

``scope_rows()``: one record of ``--samples`` points captured by each new emulated scope (the R&S
RTM3004 behind driver ``rs-rtb2000``, the Tektronix MSO54 behind ``tektronix-mso``), read through
the real stack (driver, pyvisa, emulated VISA library, emulator) in binary (``FORMat REAL,32`` /
``DATa:ENCdg SRIbinary``) and in ASCII (``FORMat ASCii`` / ``DATa:ENCdg ASCii``), best of
``--repeats`` each; both reads must return the same record.

``awg_rows()``: the AWG5200 takes a waveform as one IEEE float32 block (``WLISt:WAVeform:DATA
"w",0,N,#...``, 4 bytes a sample) or as comma-separated numbers (about 12 bytes and a formatted,
then parsed, number a sample). ``awg_upload`` times ``upload_arb`` against ``upload_arb_ascii`` of
the same samples; ``awg_round_trip`` adds the read-back of the waveform (``WLISt:WAVeform:DATA?``,
a float32 block: the instrument has no ASCII read-back) that ``verify=True`` does.

Target: binary >= 10x faster than ASCII.

Usage: ``python benchmarks/bench_transfer_families.py [--samples N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

#: scope driver -> a sample rate it offers (1 M points span 2 ms and 1.6 ms)
SCOPES = {"rs-rtb2000": 5e8, "tektronix-mso": 6.25e8}


def _best(read, repeats: int) -> tuple[float, object]:
    best, wave = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        wave = read()
        best = min(best, time.perf_counter() - t)
    return best, wave


def scope_read(family: str, samples: int, repeats: int) -> dict[str, float | str]:
    """Capture one free-running record of ``samples`` points and read it both ways."""
    from spinlab import open_device

    rate = SCOPES[family]
    with open_device(f"bench:emulated?scope={family}") as bench:
        scope = bench.scope
        capture = scope.configure_capture(1, samples / rate, rate, full_scale_V=0.05, offset_V=0.02)
        scope.trigger_mode = "AUTO"  # acquire at once: the transfer is what is measured
        scope.arm_single()
        scope.wait_acquired(10.0)
        binary_s, binary = _best(lambda: scope.read_waveform(1), repeats)
        ascii_s, text = _best(lambda: scope.read_waveform(1, ascii=True), repeats)
    if not (binary.n == text.n == capture["points"] and np.allclose(binary.samples, text.samples, atol=1e-6)):
        raise RuntimeError(f"{family}: the binary and ASCII reads differ")
    return {
        "metric": "scope_read",
        "family": family,
        "samples": int(binary.n),
        "binary_s": binary_s,
        "ascii_s": ascii_s,
        "ratio": ascii_s / binary_s,
        "target_ratio": 10,
    }


def scope_rows(samples: int = 1_000_000, repeats: int = 3) -> list[dict[str, float | str]]:
    """One ``scope_read`` row per new scope family."""
    return [scope_read(family, samples, repeats) for family in SCOPES]


def awg_rows(samples: int = 1_000_000, repeats: int = 3) -> list[dict]:
    """Binary vs ASCII upload (and round trip) of ``samples`` on the emulated AWG5200."""
    from spinlab.instruments.bench import open_bench

    samples_V = np.random.default_rng(0).uniform(-0.3, 0.3, samples)
    rate = 1e8
    rows = []
    with open_bench("emulated", awg="tektronix-awg5200") as bench:
        awg = bench.awg
        for metric, verify in (("awg_upload", False), ("awg_round_trip", True)):
            binary, _ = _best(lambda v=verify: awg.upload_arb("BENCH", samples_V, rate, verify=v), repeats)
            ascii_, _ = _best(
                lambda v=verify: awg.upload_arb_ascii("BENCH", samples_V, rate, verify=v), repeats
            )
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
    for row in [*scope_rows(args.samples, args.repeats), *awg_rows(args.samples, args.repeats)]:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
