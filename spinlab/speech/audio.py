"""Spoken-digit audio: the FSDD recordings on disk, their download, resampling and augmentation.

The Free Spoken Digit Dataset (FSDD) names every recording ``{digit}_{speaker}_{index}.wav``
(8 kHz, mono, 16-bit PCM). :func:`list_fsdd` reads such a directory and validates every name,
:func:`read_wav` validates the format, :func:`fetch_fsdd` downloads the pinned upstream commit
into a user cache. Network access happens only in :func:`fetch_fsdd` (``spinlab data fetch
fsdd``); everything else works offline. :func:`read_audio` reads what a user recorded (any rate, any
PCM or float format, mixed down to mono), :func:`resample` brings it to the rate a readout was
trained at, and :func:`speed_perturb` makes the training copies that teach a readout voices it
has not heard (Ko et al., Interspeech 2015: speed perturbation scales tempo,
pitch and formants together, as a different vocal tract does).

Every wav is checked before its samples are read (:func:`wav_info`): a regular file of at most
64 MiB (:mod:`spinlab.files`) whose header declares at least one channel, a sample rate and at
most :data:`MAX_AUDIO_S` seconds. A digit is spoken in about a second; an hour of audio would
need gigabytes once converted and resampled, so it is refused in one line instead.

Why the checksum covers the extracted recordings and not the archive: GitHub generates commit
archives on the fly and does not promise byte-identical tarballs over time, so a digest of the
archive would break for reasons unrelated to the data. The digest of the recordings themselves
(name + SHA-256 of every file) is stable and is what the experiment actually depends on.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from spinlab.errors import AudioInputError, DatasetError
from spinlab.files import check_file

#: Sample rate of every FSDD recording.
FSDD_RATE_HZ = 8000
#: Upstream repository and the commit the project is pinned to (the shared 5-speaker copy).
FSDD_REPOSITORY = "Jakobovski/free-spoken-digit-dataset"
FSDD_COMMIT = "26eb9aa"
FSDD_URL = f"https://codeload.github.com/{FSDD_REPOSITORY}/tar.gz/{FSDD_COMMIT}"
#: Speakers covered by the pinned digest (the upstream sixth speaker is not verified, so not kept).
FSDD_SPEAKERS = ("george", "jackson", "lucas", "theo", "yweweler")
#: :func:`recordings_digest` of the 2,500 recordings of ``FSDD_SPEAKERS`` at ``FSDD_COMMIT``.
FSDD_RECORDINGS_SHA256 = "4d2c04f63188f0f3972e5f4b501790602257d8283db78ffbbac8edcaac13171b"

#: Longest audio file spinlab reads (s): a spoken digit lasts about a second.
MAX_AUDIO_S = 60.0
#: Sample rates a wav may declare (Hz): telephone to studio audio.
MIN_RATE_HZ, MAX_RATE_HZ = 1000, 384_000

_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z][A-Za-z0-9-]*)_(?P<index>[0-9]+)\.wav$")


@dataclass(frozen=True)
class Utterance:
    """One FSDD recording: where it is and what its name says it contains."""

    path: Path
    digit: int
    speaker: str
    index: int

    @property
    def name(self) -> str:
        return self.path.name

    def load(self) -> np.ndarray:
        """Samples as float64 in [-1, 1) at :data:`FSDD_RATE_HZ`."""
        return read_wav(self.path, expected_rate_Hz=FSDD_RATE_HZ)


def parse_name(name: str) -> tuple[int, str, int]:
    """``"3_theo_17.wav"`` -> ``(3, "theo", 17)``; raises :class:`DatasetError` otherwise."""
    match = _NAME.match(name)
    if match is None:
        raise DatasetError(
            f"{name!r} is not an FSDD recording name; expected '{{digit}}_{{speaker}}_{{index}}.wav' "
            "such as '3_theo_17.wav'"
        )
    return int(match["digit"]), match["speaker"], int(match["index"])


def list_fsdd(directory: str | Path) -> list[Utterance]:
    """All recordings in ``directory`` (or its ``recordings/`` subfolder), sorted by name.

    Every ``.wav`` file must follow the FSDD naming scheme; a stray name is an error rather than
    silently skipped, because a mislabelled file would corrupt the split.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"FSDD directory {str(root)!r} does not exist; name the folder of its .wav recordings "
            f"instead, or leave it out to use ${FSDD_ENV} or the `spinlab data fetch fsdd` copy"
        )
    if not any(root.glob("*.wav")) and (root / "recordings").is_dir():
        root = root / "recordings"
    files = sorted(root.glob("*.wav"))
    if not files:
        raise DatasetError(f"no .wav recordings in {str(root)!r}; expected files like '3_theo_17.wav'")
    utterances = []
    for path in files:
        digit, speaker, index = parse_name(path.name)
        utterances.append(Utterance(path, digit, speaker, index))
    return utterances


@dataclass(frozen=True)
class WavInfo:
    """What a wav header declares: enough to refuse a file before reading its samples."""

    channels: int
    rate_Hz: int
    bits: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate_Hz


def wav_info(path: str | Path) -> WavInfo:
    """The header of a RIFF (or RIFX) wav, checked: a regular file of bounded size, at least one
    channel, a sample rate, and at most :data:`MAX_AUDIO_S` seconds (the data chunk's declared
    size, capped by what the file holds)."""
    path = check_file(path, "wav", DatasetError)
    size = path.stat().st_size
    fmt = None
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            raise DatasetError(
                f"cannot read {str(path)!r} as a wav file: no RIFF/WAVE header; save it as a wav"
            )
        order = "<" if head[:4] == b"RIFF" else ">"
        for _ in range(1000):  # chunks before the data: fmt, LIST, fact, ... a handful
            chunk = fh.read(8)
            if len(chunk) < 8:
                break
            name, length = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if name == b"fmt ":
                body = fh.read(16)
                if len(body) < 16:
                    break
                _, channels, rate, _, _, bits = struct.unpack(order + "HHIIHH", body)
                fmt = channels, rate, bits
                fh.seek(length - 16 + (length & 1), 1)
            elif name == b"data" and fmt is not None:
                channels, rate, bits = fmt
                if channels == 0 or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ or bits == 0:
                    raise DatasetError(
                        f"{path.name} declares {channels} channels of {bits}-bit samples at "
                        f"{rate} Hz: it is corrupt; record or export it again"
                    )
                frames = min(length, size - fh.tell()) // (channels * ((bits + 7) // 8))
                info = WavInfo(channels, rate, bits, frames)
                if info.duration_s > MAX_AUDIO_S:
                    raise AudioInputError(
                        f"{path.name} lasts {info.duration_s:.0f} s; spinlab reads at "
                        f"most {MAX_AUDIO_S:g} s of audio (a spoken digit lasts about a "
                        "second): cut the words out of it first"
                    )
                return info
            else:
                fh.seek(length + (length & 1), 1)
    missing = "fmt" if fmt is None else "data"
    raise DatasetError(
        f"cannot read {str(path)!r} as a wav file: no {missing} chunk before its end; "
        "record or export it again"
    )


def _read_samples(path: str | Path) -> tuple[Path, int, np.ndarray]:
    """``(path, rate, samples)`` of a wav whose header :func:`wav_info` accepted."""
    path = Path(path)
    wav_info(path)
    try:
        with warnings.catch_warnings():  # a truncated file reads as far as it goes, without a warning
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except Exception as exc:  # scipy's reader fails in many ways on a damaged file (even UnboundLocalError)
        raise DatasetError(f"cannot read {str(path)!r} as a wav file: {type(exc).__name__}: {exc}") from None
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise DatasetError(
            f"{path.name} holds NaN or infinite samples; export it again as PCM or clean float"
        )
    return path, int(rate), data


def read_wav(path: str | Path, expected_rate_Hz: int | None = FSDD_RATE_HZ) -> np.ndarray:
    """Read a mono 16-bit PCM wav as float64 in [-1, 1); check its sample rate."""
    path, rate, data = _read_samples(path)
    if expected_rate_Hz is not None and rate != expected_rate_Hz:
        raise DatasetError(
            f"{path.name} is sampled at {rate} Hz, expected {expected_rate_Hz} Hz; "
            "resample it first (FSDD recordings are 8 kHz)"
        )
    if data.ndim != 1:
        raise DatasetError(
            f"{path.name} has {data.shape[1]} channels, expected mono; mix it down to one channel first"
        )
    if data.dtype != np.int16:
        raise DatasetError(f"{path.name} holds {data.dtype} samples, expected 16-bit PCM; convert it first")
    if data.size == 0:
        raise DatasetError(f"{path.name} has no samples")
    return data.astype(np.float64) / 32768.0


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Any wav a user records (8/16/24/32-bit PCM or float, mono or multi-channel) as mono
    float64 in [-1, 1] and its sample rate."""
    path, rate, data = _read_samples(path)
    if data.size == 0:
        raise DatasetError(f"{path.name} has no samples")
    if data.dtype.kind == "f":  # beyond full scale is clipping, as a sound card or a DAW would
        samples = np.clip(data.astype(np.float64), -1.0, 1.0)
    elif data.dtype == np.uint8:
        samples = (data.astype(np.float64) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        samples = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    else:
        raise DatasetError(f"{path.name} holds {data.dtype} samples; save it as PCM or float wav")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return samples, int(rate)


def resample(samples: np.ndarray, from_Hz: int, to_Hz: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``from_Hz`` to ``to_Hz``.

    Upsampling is refused: audio recorded below ``to_Hz`` lacks the top of the band the
    features were trained on, and would be recognised worse without saying so.
    """
    if int(from_Hz) != from_Hz or from_Hz <= 0:
        raise AudioInputError(f"sample rate {from_Hz!r} is not a positive whole number of Hz")
    if from_Hz < to_Hz:
        raise AudioInputError(
            f"audio sampled at {int(from_Hz)} Hz is below the {int(to_Hz)} Hz the readout "
            f"was trained at; record at {int(to_Hz)} Hz or more"
        )
    if from_Hz == to_Hz:
        return np.asarray(samples, dtype=np.float64)
    ratio = Fraction(int(to_Hz), int(from_Hz))
    return resample_poly(np.asarray(samples, dtype=np.float64), ratio.numerator, ratio.denominator)


def speed_perturb(samples: np.ndarray, factor: float) -> np.ndarray:
    """The utterance spoken ``factor`` times faster (and that much higher), same sample rate."""
    if not 0.5 <= factor <= 2.0:
        raise AudioInputError(f"speed factor must be in [0.5, 2], got {factor}")
    ratio = Fraction(factor).limit_denominator(50)
    return resample_poly(np.asarray(samples, dtype=np.float64), ratio.denominator, ratio.numerator)


# --- the pinned download --------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$SPINLAB_CACHE/fsdd`` if set, else ``$XDG_CACHE_HOME/spinlab/fsdd`` or ``~/.cache/spinlab/fsdd``."""
    if os.environ.get("SPINLAB_CACHE"):
        return Path(os.environ["SPINLAB_CACHE"]).expanduser() / "fsdd"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "spinlab" / "fsdd"


#: Environment variable naming a local FSDD copy (a folder of its .wav recordings).
FSDD_ENV = "SPINLAB_FSDD"


def find_fsdd(directory: str | Path | None = None, *, setting: str = "data_dir") -> Path:
    """The folder of FSDD recordings to use: ``directory`` if given, else ``$SPINLAB_FSDD`` if
    set, else the download cache of ``spinlab data fetch fsdd``: the one resolver of the command
    line, the plans called from Python and the benchmarks. The one chosen must hold FSDD
    recordings (names checked by :func:`list_fsdd`); a :class:`DatasetError` says what to do
    otherwise, naming the caller's ``setting`` (``data_dir`` in Python, ``--data`` on the
    command line)."""
    if directory:
        where, root, instead = setting, Path(directory).expanduser(), f"leave out {setting}"
    elif os.environ.get(FSDD_ENV):
        where, root, instead = FSDD_ENV, Path(os.environ[FSDD_ENV]).expanduser(), f"unset {FSDD_ENV}"
    else:
        root = default_cache_dir() / "recordings"
        if not any(root.glob("*.wav")):
            raise DatasetError(
                f"no FSDD recordings found: run `spinlab data fetch fsdd` once (downloads them "
                f"into {root}), or set {setting} or {FSDD_ENV} to a folder of FSDD .wav recordings"
            )
        where = instead = ""
    if not any(root.glob("*.wav")) and (root / "recordings").is_dir():
        root = root / "recordings"
    if where and not any(root.glob("*.wav")):
        what = "holds no .wav recordings" if root.is_dir() else "is not a folder"
        raise DatasetError(
            f"{where} {str(root)!r} {what}; point it at the folder of FSDD recordings "
            f"('3_theo_17.wav', ...), or {instead} and run `spinlab data fetch fsdd`"
        )
    list_fsdd(root)  # every name must be an FSDD name
    return root


def recordings_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over the sorted lines ``"<name> <sha256 of content>\\n"``: one number per dataset."""
    lines = sorted(f"{name} {hashlib.sha256(content).hexdigest()}\n" for name, content in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def directory_digest(directory: str | Path) -> str:
    """:func:`recordings_digest` of the ``.wav`` files in a directory."""
    return recordings_digest((p.name, p.read_bytes()) for p in sorted(Path(directory).glob("*.wav")))


def install_archive(
    archive: str | Path,
    destination: str | Path,
    *,
    expected_sha256: str,
    speakers: Sequence[str] = FSDD_SPEAKERS,
) -> Path:
    """Extract the recordings of ``speakers`` from an FSDD tarball, verify, install atomically.

    Only regular ``.wav`` members under a ``recordings/`` folder are read (no paths are taken from
    the archive, so it cannot write outside ``destination``). The digest of the extracted
    recordings must equal ``expected_sha256``; otherwise nothing is installed.
    Returns the installed ``recordings`` directory.
    """
    destination = Path(destination).expanduser()
    wanted = set(speakers)
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 2 or parts[-2] != "recordings":
                    continue
                name = parts[-1]
                if not name.endswith(".wav"):
                    continue
                _, speaker, _ = parse_name(name)
                if speaker in wanted:
                    contents[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read FSDD archive {str(archive)!r}: {exc}") from None
    if not contents:
        raise DatasetError(
            f"archive {str(archive)!r} holds no recordings of speakers {sorted(wanted)}; "
            "it is not an FSDD archive, download it again"
        )
    digest = recordings_digest(contents.items())
    if digest != expected_sha256:
        raise DatasetError(
            f"FSDD recordings checksum mismatch: got {digest}, expected {expected_sha256} "
            f"({len(contents)} files); the download is corrupt or not commit {FSDD_COMMIT}. Nothing was installed"
        )
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".recordings-", dir=destination))
    for name, content in contents.items():
        (staging / name).write_bytes(content)
    target = destination / "recordings"
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    (destination / "SOURCE.txt").write_text(
        f"{FSDD_URL}\ncommit {FSDD_COMMIT}\nspeakers {' '.join(sorted(wanted))}\n"
        f"recordings sha256 {digest}\nlicense CC BY-SA 4.0, Zohar Jackson and contributors\n"
    )
    return target


def fetch_fsdd(
    destination: str | Path | None = None,
    *,
    url: str = FSDD_URL,
    expected_sha256: str | None = None,
    force: bool = False,
    opener: Callable[[str], io.BufferedIOBase] | None = None,
) -> Path:
    """Download the pinned FSDD commit into the cache (the only networked function of spinlab).

    Skips the download when the cache already holds verified recordings (unless ``force``).
    ``opener`` replaces ``urllib.request.urlopen`` (used by tests with a local archive).
    """
    destination = Path(destination).expanduser() if destination else default_cache_dir()
    expected = expected_sha256 or FSDD_RECORDINGS_SHA256
    target = destination / "recordings"
    if target.is_dir() and not force and directory_digest(target) == expected:
        return target
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination, suffix=".tar.gz", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with (opener or _urlopen)(url) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise DatasetError(
                f"downloading {url} failed: {exc}; check the network or pass --data with a local copy"
            ) from None
    try:
        return install_archive(tmp_path, destination, expected_sha256=expected)
    finally:
        tmp_path.unlink(missing_ok=True)


def _urlopen(url: str):
    return urllib.request.urlopen(url, timeout=60)
