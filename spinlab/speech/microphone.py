"""Live spoken digits: microphone blocks through sounddevice, words found by their energy.

:class:`Microphone` wraps a ``sounddevice.InputStream`` whose callback only queues copies of
the blocks (PortAudio's thread must never wait on us); :class:`WordDetector` end-points words
in that stream (start when the level rises ``start_dB`` above the tracked noise floor, stop after
``hang_s`` below ``stop_dB``); :func:`prepare` trims the silence, checks the level and resamples a
word to the readout's rate; :func:`recognise_stream` ties them to a readout and a device.
Everything here is plain Python over numpy, so a demo or a notebook calls it as the CLI does.

Why the floor is tracked rather than fixed: a lab's background level depends on the room, the
microphone and its gain; a fixed threshold would either miss quiet voices or trigger on fans.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinlab.errors import AudioDeviceError, AudioInputError
from spinlab.speech.audio import resample

#: A word whose loudest 10 ms stays below this level (dBFS, RMS) is silence, not speech.
SILENT_DBFS = -60.0
#: Samples at or beyond this magnitude count as clipped (full scale is 1).
CLIP_LEVEL = 0.999
#: More than this fraction of clipped samples makes a word unusable.
MAX_CLIPPED = 0.001
#: What to install when PortAudio is missing.
PORTAUDIO_HINT = (
    "install the PortAudio library: `apt-get install libportaudio2` (Debian/Ubuntu), "
    "`dnf install portaudio` (Fedora), `brew install portaudio` (macOS)"
)


def import_sounddevice() -> Any:
    """The sounddevice module, or one line saying what is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when it cannot load PortAudio
        raise AudioDeviceError(
            f"no PortAudio library ({exc}); {PORTAUDIO_HINT}, or pass --file WAV"
        ) from None
    except ImportError:
        raise AudioDeviceError("the sounddevice package is missing: `pip install sounddevice`") from None
    return sounddevice


@dataclass
class Block:
    """Samples as the sound card delivered them, and when they arrived (``time.perf_counter``)."""

    samples: np.ndarray
    arrived_s: float


class Microphone:
    """Mono float32 blocks from one input device; a context manager that always closes it.

    ``device``: a sounddevice device index or name substring (None: the system default).
    ``rate_Hz``: None opens the device at its default rate (the words are resampled later).
    """

    def __init__(
        self, device: int | str | None = None, rate_Hz: int | None = None, block_s: float = 0.02
    ) -> None:
        self.device = device
        self.rate_Hz = rate_Hz
        self.block_s = block_s
        self.name = ""
        self.overflows = 0
        self._queue: queue.Queue[Block] = queue.Queue()
        self._stream: Any = None

    def __enter__(self) -> Microphone:
        sd = import_sounddevice()
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            which = "" if self.device is None else f" {self.device!r}"
            raise AudioDeviceError(
                f"no audio input device{which} ({exc}); plug in a microphone, list devices with "
                "`python -m sounddevice` and choose one with --input, or pass --file WAV"
            ) from None
        self.name = str(info["name"])
        rate = int(self.rate_Hz or info["default_samplerate"])
        try:
            sd.check_input_settings(self.device, channels=1, dtype="float32", samplerate=rate)
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioInputError(
                f"input device {self.name!r} does not support {rate} Hz ({exc}); "
                f"choose a rate it supports with --rate (its default is "
                f"{int(info['default_samplerate'])} Hz)"
            ) from None
        self.rate_Hz = rate
        try:
            self._stream = sd.InputStream(
                samplerate=rate,
                blocksize=max(1, int(round(self.block_s * rate))),
                device=self.device,
                channels=1,
                dtype="float32",
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self.close()
            raise AudioDeviceError(f"cannot open input device {self.name!r}: {exc}") from None
        return self

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.overflows += 1
        self._queue.put(Block(np.array(indata[:, 0], dtype=np.float32), time.perf_counter()))

    def blocks(self, timeout_s: float = 5.0) -> Iterator[Block]:
        """Blocks as they arrive; a stream that stops delivering is an error, not a hang."""
        while True:
            try:
                yield self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AudioDeviceError(
                    f"input device {self.name!r} delivered no audio for "
                    f"{timeout_s:g} s; is it in use by another program?"
                ) from None

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.stop()
            finally:
                stream.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Word:
    """One detected word: its samples (with margins) and the stream times that matter."""

    samples: np.ndarray
    rate_Hz: int
    #: Stream time (s) of the first and last loud frame.
    start_s: float
    end_s: float
    #: ``time.perf_counter()`` when the audio of the end of speech arrived (None for files).
    end_arrived_s: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_Hz


@dataclass
class WordDetector:
    """Energy end-pointing over a stream: feed blocks, get the words that ended in them."""

    rate_Hz: int
    frame_s: float = 0.01
    start_dB: float = 15.0
    stop_dB: float = 8.0
    #: Quiet time that ends a word (the closure before a final /t/ or /ks/ is shorter).
    hang_s: float = 0.25
    min_word_s: float = 0.1
    max_word_s: float = 2.0
    margin_s: float = 0.1
    #: The floor never goes below this (digital silence would make any click a word).
    min_floor_dBFS: float = -75.0
    #: Seconds of non-speech frames over which the floor is the 20th percentile.
    floor_window_s: float = 3.0
    _buffer: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _levels: deque = field(init=False, repr=False)
    _frame: int = field(default=0, init=False, repr=False)
    _arrivals: deque = field(default_factory=deque, init=False, repr=False)
    _history: deque = field(init=False, repr=False)
    _start: int | None = field(default=None, init=False, repr=False)
    _last_loud: int = field(default=-1, init=False, repr=False)
    _run: int = field(default=0, init=False, repr=False)
    peak: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.frame_len = max(1, int(round(self.frame_s * self.rate_Hz)))
        self._levels = deque(maxlen=max(1, int(self.floor_window_s / self.frame_s)))
        self._history = deque(
            maxlen=int((self.max_word_s + 2 * self.margin_s + self.hang_s) / self.frame_s) + 8
        )

    @property
    def floor_dBFS(self) -> float:
        if not self._levels:
            return self.min_floor_dBFS
        return max(float(np.percentile(self._levels, 20)), self.min_floor_dBFS)

    def feed(self, samples: np.ndarray, arrived_s: float | None = None) -> list[Word]:
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        if samples.size:
            self.peak = max(self.peak, float(np.max(np.abs(samples))))
        data = np.concatenate([self._pending, samples])
        n = len(data) // self.frame_len
        self._pending = data[n * self.frame_len :]
        words = []
        for frame in data[: n * self.frame_len].reshape(n, self.frame_len):
            self._history.append(frame)
            self._arrivals.append(arrived_s)
            while len(self._arrivals) > len(self._history):
                self._arrivals.popleft()
            word = self._step(frame)
            if word is not None:
                words.append(word)
            self._frame += 1
        return words

    def _step(self, frame: np.ndarray) -> Word | None:
        level = 10 * np.log10(float(np.mean(frame**2)) + 1e-20)
        floor = self.floor_dBFS
        frames = lambda s: int(round(s / self.frame_s))  # noqa: E731
        if self._start is None:
            self._run = self._run + 1 if level > max(floor + self.start_dB, SILENT_DBFS) else 0
            if self._run >= 3:  # 30 ms above the start threshold: a word began 3 frames ago
                self._start = self._frame - 2
                self._last_loud = self._frame
            else:
                self._levels.append(level)
            return None
        if level > floor + self.stop_dB:
            self._last_loud = self._frame
        quiet = self._frame - self._last_loud
        if quiet < frames(self.hang_s) and self._frame - self._start < frames(self.max_word_s):
            return None
        return self._cut()

    def _cut(self) -> Word | None:
        start, last = self._start, self._last_loud
        self._start, self._run = None, 0
        if (last - start + 1) * self.frame_s < self.min_word_s:
            return None
        margin = int(round(self.margin_s / self.frame_s))
        first = max(start - margin, self._frame - len(self._history) + 1)
        stop = min(last + margin, self._frame)
        offset = self._frame - len(self._history) + 1  # frame index of history[0]
        frames = list(self._history)[first - offset : stop - offset + 1]
        arrived = list(self._arrivals)[last - offset] if 0 <= last - offset < len(self._arrivals) else None
        return Word(
            np.concatenate(frames), self.rate_Hz, start * self.frame_s, (last + 1) * self.frame_s, arrived
        )


def trim_silence(
    samples: np.ndarray, rate_Hz: int, below_peak_dB: float = 40.0, margin_s: float = 0.1
) -> np.ndarray:
    """Cut leading and trailing audio more than ``below_peak_dB`` under the loudest 10 ms,
    keeping ``margin_s`` either side (FSDD's recordings are cut about this tightly)."""
    samples = np.asarray(samples, dtype=np.float64)
    n = max(1, int(round(0.01 * rate_Hz)))
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    if len(frames) == 0:
        return samples
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    loud = np.flatnonzero(levels > levels.max() - below_peak_dB)
    margin = int(round(margin_s * rate_Hz))
    return samples[max(0, loud[0] * n - margin) : min(len(samples), (loud[-1] + 1) * n + margin)]


#: What to change about a silent or clipped input, by where it came from.
_ADVICE = {
    "microphone": (
        "unmute the microphone, raise its gain, or choose another with --input",
        "lower the microphone gain or speak further from it",
    ),
    "file": (
        "check that it is the recording you meant, or record it again louder",
        "record it again at a lower level",
    ),
}


def check_level(
    samples: np.ndarray, rate_Hz: int, what: str = "the input", source: str = "microphone"
) -> None:
    """Refuse silence and clipping with one line saying what to change; ``source``
    (``"microphone"`` or ``"file"``) decides the advice."""
    silent_advice, clipped_advice = _ADVICE[source]
    samples = np.asarray(samples, dtype=np.float64)
    n = max(1, int(round(0.01 * rate_Hz)))
    frames = samples[: max(n, len(samples) // n * n)]
    if len(frames) < n:
        frames = np.pad(frames, (0, n - len(frames)))
    loudest = float(np.max(10 * np.log10(np.mean(frames.reshape(-1, n) ** 2, axis=1) + 1e-20)))
    if loudest < SILENT_DBFS:
        raise AudioInputError(f"{what} is silent (loudest 10 ms at {loudest:.0f} dBFS): {silent_advice}")
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED:
        raise AudioInputError(
            f"{what} is clipped ({100 * clipped:.1f} % of samples at full scale): {clipped_advice}"
        )


def prepare(
    samples: np.ndarray,
    rate_Hz: int,
    readout_rate_Hz: int,
    what: str = "the input",
    source: str = "microphone",
) -> np.ndarray:
    """A word as the readout wants it: silence trimmed, level checked (``source``: see
    :func:`check_level`), at the readout's rate."""
    check_level(samples, rate_Hz, what, source)
    return resample(trim_silence(samples, rate_Hz), rate_Hz, readout_rate_Hz)


def microphone_words(
    microphone: Microphone, detector: WordDetector, silent_after_s: float = 10.0
) -> Iterator[Word]:
    """Words from a running microphone until the caller stops (Ctrl-C); a stream that stays
    digitally silent for ``silent_after_s`` is an error (a muted or wrong input)."""
    heard = 0.0
    for block in microphone.blocks():
        heard += len(block.samples) / microphone.rate_Hz
        yield from detector.feed(block.samples, block.arrived_s)
        if heard >= silent_after_s and 20 * np.log10(detector.peak + 1e-20) < SILENT_DBFS - 20:
            raise AudioInputError(
                f"the input {microphone.name!r} has been silent for {heard:.0f} s "
                f"(peak {20 * np.log10(detector.peak + 1e-20):.0f} dBFS): unmute it, "
                "raise its gain, or choose another with --input"
            )


def recognise_stream(
    readout: Any, device: Any, words: Iterable[Word], piece_frames: int = 0
) -> Iterator[tuple[Word, Any]]:
    """``(word, Recognition)`` for each word (``(word, AudioInputError)`` for one that is silent
    or clipped); the timings add ``prepare_s`` and, for live words, ``latency_s`` from the end
    of speech to the result. ``piece_frames``: see :meth:`spinlab.speech.readout.DigitReadout.states`."""
    for word in words:
        t0 = time.perf_counter()
        try:
            samples = prepare(word.samples, word.rate_Hz, readout.rate_Hz, "the word")
        except AudioInputError as exc:
            yield word, exc
            continue
        prepared = time.perf_counter()
        result = readout.recognise(device, [samples], piece_frames)[0]
        result.timings_s["prepare_s"] = prepared - t0
        if word.end_arrived_s is not None:
            result.timings_s["latency_s"] = time.perf_counter() - word.end_arrived_s
        yield word, result
