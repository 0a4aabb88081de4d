"""`spinlab listen` and `spinlab enrol`: spoken digits from a microphone or files, live."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from spinlab.cli.common import MAX_SEED, JsonOption, emit_json, error_line, user_errors

ReadoutDeviceOption = typer.Option(
    None, "--device", "-d", help="Device address (default: the readout's; it refuses any other)."
)
SeedOption = typer.Option(
    0,
    "--seed",
    min=0,
    max=MAX_SEED,
    help="Seed of the device's noise (nothing is recorded: no run file is written); a seed in "
    "the device address wins.",
)

ReadoutOption = typer.Option(
    ..., "--readout", help="Run directory of `spinlab run spoken-digits` (or its readout.h5)."
)
InputOption = typer.Option(
    None,
    "--input",
    help="Sound input device: index or part of its name "
    "(`python -m sounddevice` lists them; default: the system's).",
)
RateOption = typer.Option(
    None, "--rate", help="Open the microphone at this rate (Hz; default: the device's own)."
)
PiecesOption = typer.Option(
    8,
    "--piece-frames",
    help="Drive each word as pieces of N frames side by side, each after "
    "one frame of warm-up: simulators and twins answer a batch about as fast as one "
    "drive (0: the word in one piece).",
)
_LABEL = re.compile(r"^(?P<digit>[0-9])[_.-]")
#: Enrolment warns below this many utterances of a digit (the microphone asks for 5 by default).
MIN_PER_DIGIT = 3


def listen(
    readout: Path = ReadoutOption,
    files: Optional[List[Path]] = typer.Option(
        None,
        "--file",
        "--files",
        help="Recognise these wavs instead of the microphone (repeatable; more may follow as arguments).",
    ),
    more_files: Optional[List[Path]] = typer.Argument(None, metavar="[WAV]...", show_default=False),
    device: Optional[str] = ReadoutDeviceOption,
    input_device: Optional[str] = InputOption,
    rate: Optional[int] = RateOption,
    play: bool = typer.Option(False, "--play", help="Play back each captured word before recognising it."),
    bias_A: Optional[float] = typer.Option(
        None, "--bias-A", help="Operating point (A); must be the readout's (default: the readout's)."
    ),
    piece_frames: int = PiecesOption,
    seed: int = SeedOption,
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Files: one JSON summary as the last line (each file's digit and stage times, accuracy "
        "when the names carry FSDD labels). Microphone: one JSON line per word.",
    ),
) -> None:
    """Recognise spoken digits live from a microphone (or wav files) with a saved readout.

    Files: a file that cannot be read or is silent or clipped gets one line on stderr and the
    others go on; exit status 1 when some failed, 2 when all did."""
    paths = list(files or []) + list(more_files or [])
    with user_errors():
        from spinlab.registry import open_device
        from spinlab.speech.readout import load_readout

        trained = load_readout(readout)
        if trained.voice_unknown:
            typer.secho(
                "note: this readout normalises each voice by its own statistics and no voice is "
                "enrolled: the training voices' channel statistics stand in (`spinlab enrol` first "
                "recognises a new voice better)",
                err=True,
                fg="yellow",
            )
        with open_device(device or trained.device_address, defaults={"seed": seed}) as dev:
            trained.check_device(dev, {} if bias_A is None else {"bias_A": bias_A})
            if paths:
                failed = _listen_files(trained, dev, paths, play, piece_frames, json_out)
            else:
                _listen_microphone(trained, dev, _input(input_device), rate, play, piece_frames, json_out)
                failed = 0
    if failed:
        raise typer.Exit(2 if failed == len(paths) else 1)


def _listen_files(
    readout: Any, device: Any, files: List[Path], play: bool, piece_frames: int, json_out: bool
) -> int:
    """Recognise each file on its own (its own device time); the number that failed."""
    from spinlab.errors import AudioInputError, DatasetError
    from spinlab.speech.audio import read_audio
    from spinlab.speech.microphone import prepare

    rows = []
    for path in files:
        t0 = time.perf_counter()
        try:
            audio, rate = read_audio(path)
            if play:
                _play(audio, rate)
            samples = prepare(audio, rate, readout.rate_Hz, str(path), source="file")
        except (AudioInputError, DatasetError, OSError) as exc:
            typer.secho(f"error: {error_line(exc)}", err=True, fg="red")
            rows.append({"file": str(path), "error": error_line(exc)})
            continue
        prepared = time.perf_counter()
        result = readout.recognise(device, [samples], piece_frames)[0]
        result.timings_s["prepare_s"] = prepared - t0
        expected = _label(path)
        rows.append(
            {
                "file": str(path),
                "digit": _digit(result),
                "scores": result.scores.tolist(),
                "expected": expected,
                "correct": None if expected is None else result.index == expected,
                "timings_s": result.timings_s,
            }
        )
        if not json_out:
            typer.echo(f"{path.name}: {_describe(readout, result)}")
    labelled = [r["correct"] for r in rows if r.get("correct") is not None]
    accuracy = sum(labelled) / len(labelled) if labelled else None
    failed = sum(1 for r in rows if "error" in r)
    if json_out:
        emit_json(
            {
                "files": rows,
                "accuracy": accuracy,
                "n_labelled": len(labelled),
                "n_failed": failed,
                "device": device.address,
                "readout": str(readout.provenance.get("run", "")),
            }
        )
    elif accuracy is not None:
        typer.echo(
            f"accuracy {100 * accuracy:.1f} % ({sum(labelled)}/{len(labelled)} files with FSDD labels)"
        )
    return failed


def _listen_microphone(
    readout: Any,
    device: Any,
    input_device: Any,
    rate: Optional[int],
    play: bool,
    piece_frames: int,
    json_out: bool,
) -> None:
    from spinlab.speech.microphone import Microphone, WordDetector, microphone_words, recognise_stream

    with Microphone(input_device, rate) as mic:
        typer.echo(
            f"listening on {mic.name!r} at {mic.rate_Hz} Hz for {device.address}; say a digit (Ctrl-C stops)",
            err=True,
        )
        words = microphone_words(mic, WordDetector(mic.rate_Hz))
        if play:
            words = (_played(word) for word in words)
        n = 0
        try:
            for word, result in recognise_stream(readout, device, words, piece_frames):
                if isinstance(result, Exception):
                    typer.secho(f"skipped a {word.duration_s:.2f} s word: {result}", err=True, fg="yellow")
                    continue
                n += 1
                if json_out:
                    emit_json(
                        {
                            "digit": _digit(result),
                            "scores": result.scores.tolist(),
                            "duration_s": word.duration_s,
                            "timings_s": result.timings_s,
                        }
                    )
                else:
                    typer.echo(_describe(readout, result))
        except KeyboardInterrupt:
            typer.echo(f"stopped after {n} words", err=True)


def enrol(
    readout: Path = ReadoutOption,
    out: Path = typer.Option(..., "--out", help="Directory for the adapted readout (readout.h5)."),
    files: Optional[List[Path]] = typer.Option(
        None,
        "--files",
        help="Enrol these wavs (named like 3_anna_0.wav) instead of recording; more may follow as arguments.",
    ),
    more_files: Optional[List[Path]] = typer.Argument(None, metavar="[WAV]...", show_default=False),
    device: Optional[str] = ReadoutDeviceOption,
    force: bool = typer.Option(False, "--force", help="Replace a readout already in --out."),
    per_digit: int = typer.Option(5, "--per-digit", help="Microphone: utterances to record for each digit."),
    speaker: str = typer.Option("enrolled", "--speaker", help="Name stored with the new voice's utterances."),
    weight: float = typer.Option(
        1.0, "--weight", help="The new voice's weight against all stored utterances together."
    ),
    input_device: Optional[str] = InputOption,
    rate: Optional[int] = RateOption,
    seed: int = SeedOption,
    json_out: bool = JsonOption,
) -> None:
    """Adapt a saved readout to a new voice from a few utterances per digit; save it as a new readout."""
    with user_errors():
        from spinlab.errors import ReadoutError
        from spinlab.registry import open_device
        from spinlab.speech.readout import load_readout, save_path

        if save_path(out).exists() and not force:
            raise ReadoutError(
                f"{save_path(out)} already exists: choose another --out, or pass --force to replace it"
            )
        trained = load_readout(readout)
        paths = list(files or []) + list(more_files or [])
        if not paths and per_digit < 1:
            raise ReadoutError(f"--per-digit must be >= 1, got {per_digit}")
        with open_device(device or trained.device_address, defaults={"seed": seed}) as dev:
            trained.check_device(dev)
            samples, labels = (
                _enrolment_files(trained, paths)
                if paths
                else _enrolment_microphone(trained, _input(input_device), rate, per_digit)
            )
            counts = {name: labels.count(i) for i, name in enumerate(trained.class_names)}
            warning = _thin_digits(counts)
            if warning:
                typer.secho(f"warning: {warning}", err=True, fg="yellow")
            adapted = trained.enrol(dev, samples, labels, speaker=speaker, weight=weight)
        saved = adapted.save(out)
    summary = {
        "readout": str(saved),
        "speaker": speaker,
        "utterances": len(samples),
        "weight": weight,
        "normalisation": adapted.normalisation,
        "per_digit": counts,
        "warning": warning,
    }
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"enrolled {len(samples)} utterances of {speaker!r}; use it with "
            f"`spinlab listen --device {adapted.device_address} --readout {out}`"
        )


def _thin_digits(counts: dict) -> Optional[str]:
    """A warning when the enrolment misses digits or has fewer than :data:`MIN_PER_DIGIT` of some."""
    missing = [name for name, n in counts.items() if n == 0]
    few = [f"{name} ({n})" for name, n in counts.items() if 0 < n < MIN_PER_DIGIT]
    if not missing and not few:
        return None
    parts = ([f"no utterances of {', '.join(missing)}"] if missing else []) + (
        [f"fewer than {MIN_PER_DIGIT} of {', '.join(few)}"] if few else []
    )
    return (
        f"{'; '.join(parts)}: the new voice is learnt only for the digits it says, and thinly; "
        f"give at least {MIN_PER_DIGIT} utterances of every digit"
    )


def _enrolment_files(readout: Any, paths: List[Path]) -> tuple[list, list]:
    from spinlab.errors import ReadoutError
    from spinlab.speech.audio import read_audio
    from spinlab.speech.microphone import prepare

    samples, labels = [], []
    for path in paths:
        label = _label(path)
        if label is None:
            raise ReadoutError(f"cannot tell which digit {path.name} is: name it like '3_anna_0.wav'")
        audio, rate = read_audio(path)
        samples.append(prepare(audio, rate, readout.rate_Hz, str(path), source="file"))
        labels.append(label)
    return samples, labels


def _enrolment_microphone(
    readout: Any, input_device: Any, rate: Optional[int], per_digit: int
) -> tuple[list, list]:
    from spinlab.errors import AudioInputError
    from spinlab.speech.microphone import Microphone, WordDetector, microphone_words, prepare

    samples, labels = [], []
    with Microphone(input_device, rate) as mic:
        words = microphone_words(mic, WordDetector(mic.rate_Hz))
        for digit, name in enumerate(readout.class_names):
            for take in range(per_digit):
                typer.echo(f"say {name!r} ({take + 1}/{per_digit})", err=True)
                while True:  # a silent or clipped word is asked for again
                    word = next(words)
                    try:
                        samples.append(prepare(word.samples, word.rate_Hz, readout.rate_Hz, "the word"))
                        break
                    except AudioInputError as exc:
                        typer.secho(f"{exc}; say {name!r} again", err=True, fg="yellow")
                labels.append(digit)
    return samples, labels


def _describe(readout: Any, result: Any) -> str:
    ranked = sorted(zip(readout.class_names, result.scores), key=lambda p: -p[1])[:3]
    scores = ", ".join(f"{name} {score:+.2f}" for name, score in ranked)
    times = ", ".join(f"{k[:-2]} {1e3 * v:.0f} ms" for k, v in result.timings_s.items())
    return f"{result.label}   (scores {scores}; {times})"


def _digit(result: Any) -> Any:
    """The recognised class as JSON wants it: a number for a digit (like ``expected``)."""
    return int(result.label) if result.label.isdigit() else result.label


def _label(path: Path) -> Optional[int]:
    match = _LABEL.match(Path(path).name)
    return int(match["digit"]) if match else None


def _input(value: Optional[str]) -> Any:
    return int(value) if value is not None and value.isdigit() else value


def _play(samples: Any, rate: int) -> None:
    from spinlab.speech.microphone import import_sounddevice

    sd = import_sounddevice()
    sd.play(samples, rate)
    sd.wait()


def _played(word: Any) -> Any:
    _play(word.samples, word.rate_Hz)
    return word


def register(app: typer.Typer) -> None:
    """Add `listen` and `enrol`."""
    app.command("listen")(listen)
    app.command("enrol")(enrol)
