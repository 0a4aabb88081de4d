"""Latency of `spinlab listen`: from the end of speech to the printed digit, per backend.

    python benchmarks/bench_listen_latency.py                                  # sim:vortex
    python benchmarks/bench_listen_latency.py --twin runs/digits-twin.pt       # and the twin
    python benchmarks/bench_listen_latency.py --readout RUN_DIR                # a given sim:vortex readout

A word of about 1 s (an FSDD recording slowed to 1.0 s) in room noise is played, in real time and
in 20 ms blocks at 16 kHz, into the same pipeline `spinlab listen` runs on microphone blocks
(:class:`~spinlab.speech.microphone.WordDetector` -> :func:`~spinlab.speech.microphone.prepare`
-> readout on the device).
The clock starts when the block holding the last loud 10 ms arrives and stops when the digit is
known, so it includes the detector's wait for silence (``hang_s``) as a user experiences it.
Without ``--readout`` a readout is trained on each backend first (a 300-utterance subset:
latency does not depend on how well it was trained). Prints one JSON line per backend:
``{"metric": "listen_latency_s", "device": ..., "latency_s": median, "hang_s": ..., "stages_s":
{...}, "target_s": 0.5}``.
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
from scipy.signal import resample_poly  # noqa: E402

from spinlab import open_device  # noqa: E402
from spinlab.cli import app  # noqa: E402
from spinlab.speech.audio import list_fsdd, speed_perturb  # noqa: E402
from spinlab.speech.microphone import WordDetector, recognise_stream  # noqa: E402
from spinlab.speech.readout import load_readout  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"
RATE_HZ = 16000
BLOCK_S = 0.02


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex", help="device address (default sim:vortex)")
    parser.add_argument("--twin", default=None, help="twin checkpoint: also measure twin:PATH")
    parser.add_argument("--readout", default=None, help="readout for --device (default: train one)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    parser.add_argument("--repeats", type=int, default=5, help="words per backend")
    parser.add_argument(
        "--piece-frames", type=int, default=8, help="as `spinlab listen --piece-frames` (0: whole word)"
    )
    args = parser.parse_args(argv)

    word = _one_second_word(args.data)
    backends = [(args.device, args.readout)] + ([(f"twin:{args.twin}", None)] if args.twin else [])
    with tempfile.TemporaryDirectory() as tmp:
        for address, readout_dir in backends:
            readout = load_readout(readout_dir or _train(address, args.data, Path(tmp)))
            with open_device(address) as device:
                readout.recognise(device, [word], args.piece_frames)  # warm-up: numba / torch first calls
                runs = [_play(readout, device, word, seed, args.piece_frames) for seed in range(args.repeats)]
            stages = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "latency_s"}
            print(
                json.dumps(
                    {
                        "metric": "listen_latency_s",
                        "device": address,
                        "latency_s": float(np.median([r["latency_s"] for r in runs])),
                        "latency_max_s": float(np.max([r["latency_s"] for r in runs])),
                        "hang_s": WordDetector(RATE_HZ).hang_s,
                        "stages_s": stages,
                        "word_s": len(word) / readout.rate_Hz,
                        "repeats": args.repeats,
                        "piece_frames": args.piece_frames,
                        "target_s": 0.5,
                    }
                ),
                flush=True,
            )


def _one_second_word(data: str) -> np.ndarray:
    """The FSDD recording nearest 1 s long, stretched to last 1.0 s (8 kHz)."""
    nearest = min(list_fsdd(data), key=lambda u: abs(u.path.stat().st_size - 44 - 2 * 8000))
    samples = nearest.load()
    return speed_perturb(samples, len(samples) / 8000 / 1.0)


def _train(address: str, data: str, root: Path) -> Path:
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app,
        [
            "run",
            "spoken-digits",
            "--device",
            address,
            "--data",
            data,
            "--limit",
            "300",
            "--augment-speeds",
            "none",
            "--runs-dir",
            str(root / "runs"),
            "--json",
        ],
    )
    if result.exit_code != 0:
        raise SystemExit(f"training a readout on {address} failed: {result.output}")
    return Path(json.loads(result.stdout.strip().splitlines()[-1])["run_dir"])


def _play(readout, device, word: np.ndarray, seed: int, piece_frames: int) -> dict[str, float]:
    """Feed silence, the word, silence in real time; return the recognised word's timings."""
    rng = np.random.default_rng(seed)
    audio = np.concatenate(
        [np.zeros(RATE_HZ // 2), resample_poly(word, RATE_HZ // 8000, 1), np.zeros(RATE_HZ)]
    )
    audio += 10 ** (-70 / 20) * rng.standard_normal(audio.size)
    detector = WordDetector(RATE_HZ)
    block = int(BLOCK_S * RATE_HZ)
    start = time.perf_counter()
    for k in range(len(audio) // block):
        time.sleep(max(0.0, start + (k + 1) * BLOCK_S - time.perf_counter()))  # the sound card's pace
        words = detector.feed(audio[k * block : (k + 1) * block], time.perf_counter())
        for found, result in recognise_stream(readout, device, words, piece_frames):
            if isinstance(result, Exception):
                raise SystemExit(f"the benchmark word was refused: {result}")
            return dict(result.timings_s)
    raise SystemExit("the detector found no word in the benchmark audio")


if __name__ == "__main__":
    main()
