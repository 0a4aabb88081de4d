"""`spinlab listen` and `spinlab enrol`: spoken digits from a microphone or files, live."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional

import typer

from spinlab.cli.common import DeviceOption, JsonOption, SeedOption, emit_json, user_errors

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


def listen(
    device: str = DeviceOption,
    readout: Path = ReadoutOption,
    files: Optional[List[Path]] = typer.Option(
        None, "--file", help="Recognise this wav instead of the microphone (repeatable)."
    ),
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
        help="Files: one JSON summary as the last line (predictions, accuracy "
        "when the names carry FSDD labels). Microphone: one JSON line per word.",
    ),
) -> None:
    """Recognise spoken digits live from a microphone (or wav files) with a saved readout."""
    with user_errors():
        from spinlab.registry import open_device
        from spinlab.speech.readout import load_readout

        trained = load_readout(readout)
        with open_device(device, defaults={"seed": seed}) as dev:
            trained.check_device(dev, {} if bias_A is None else {"bias_A": bias_A})
            if files:
                _listen_files(trained, dev, files, play, piece_frames, json_out)
            else:
                _listen_microphone(trained, dev, _input(input_device), rate, play, piece_frames, json_out)


def _listen_files(
    readout: Any, device: Any, files: List[Path], play: bool, piece_frames: int, json_out: bool
) -> None:
    from spinlab.speech.audio import read_audio
    from spinlab.speech.microphone import prepare

    samples = []
    for path in files:
        audio, rate = read_audio(path)
        if play:
            _play(audio, rate)
        samples.append(prepare(audio, rate, readout.rate_Hz, str(path)))
    results = readout.recognise(device, samples, piece_frames)
    rows = []
    for path, result in zip(files, results):
        expected = _label(path)
        rows.append(
            {
                "file": str(path),
                "digit": result.label,
                "scores": result.scores.tolist(),
                "expected": expected,
                "correct": None if expected is None else result.index == expected,
                "timings_s": result.timings_s,
            }
        )
        if not json_out:
            typer.echo(f"{path.name}: {_describe(readout, result)}")
    labelled = [r["correct"] for r in rows if r["correct"] is not None]
    accuracy = sum(labelled) / len(labelled) if labelled else None
    if json_out:
        emit_json(
            {
                "files": rows,
                "accuracy": accuracy,
                "n_labelled": len(labelled),
                "device": device.address,
                "readout": str(readout.provenance.get("run", "")),
            }
        )
    elif accuracy is not None:
        typer.echo(
            f"accuracy {100 * accuracy:.1f} % ({sum(labelled)}/{len(labelled)} files with FSDD labels)"
        )


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
                            "digit": result.label,
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
    device: Optional[str] = typer.Option(
        None, "--device", "-d", help="Device address (default: the readout's)."
    ),
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
        from spinlab.speech.readout import load_readout

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
            adapted = trained.enrol(dev, samples, labels, speaker=speaker, weight=weight)
        saved = adapted.save(out)
    summary = {
        "readout": str(saved),
        "speaker": speaker,
        "utterances": len(samples),
        "weight": weight,
        "per_digit": {
            name: int(sum(1 for y in labels if y == i)) for i, name in enumerate(trained.class_names)
        },
    }
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"enrolled {len(samples)} utterances of {speaker!r}; use it with "
            f"`spinlab listen --device {adapted.device_address} --readout {out}`"
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
        samples.append(prepare(audio, rate, readout.rate_Hz, str(path)))
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
