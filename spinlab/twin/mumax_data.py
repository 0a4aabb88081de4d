"""The MuMax3 skyrmion traces of Chen et al. (Nat. Commun. 13, 1016 (2022)): where they are found,
and their pinned download (``spinlab data fetch mumax3``).

They come from the paper's public repository (GitHub ``Xing-CHEN18/NeuralODEs_for_physics``, MIT
licence), each file at the commit that added it and checked against its SHA-256, so a fetched copy
is byte for byte the one spinlab's results were measured on. Network access happens only in
:func:`fetch_mumax3`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from spinlab.errors import DatasetError

#: Environment variable naming a local copy (the folder holding the files below).
MUMAX3_ENV = "SPINLAB_MUMAX3"
REPOSITORY = "https://github.com/Xing-CHEN18/NeuralODEs_for_physics"
_RAW = "https://raw.githubusercontent.com/Xing-CHEN18/NeuralODEs_for_physics"
#: local name -> (commit, path upstream, SHA-256)
FILES = {
    "one_skyrmion_voltage_train/table.txt": (
        "8a4192748114aed1c7d0104cba1ae16c8ac4b39c",
        "Mumax3_simulations/1skyrmion_voltage_train/table.txt",
        "f47566f8e0ec0d3d96f411315768bfbf59eb1622fa401c561c727e1c8faf4a05",
    ),
    "one_skyrmion_ku_dmi_train/table.txt": (
        "790476126566320274a2e0c76b2d0e766da36458",
        "Mumax3_simulations/1skyrmion_input_PMA_DMI_train/table.txt",
        "efcd3d4e11d819ea30731c685271f589a5aac7677bbb2ffe94f510337c5b67c7",
    ),
    "mackey_glass.txt": (
        "3ef632eb083095024f0c98780dc21b4ed924fb57",
        "Mackey_Glass_series_prediction_skyrmion/mg.txt",
        "ec432e6a1b21406fdd41805c512d05c19a947a311869d0a11da7effd7fae94f0",
    ),
}


def default_cache_dir() -> Path:
    """``$SPINLAB_CACHE/mumax3-skyrmion``, else ``spinlab/mumax3-skyrmion`` under
    ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if os.environ.get("SPINLAB_CACHE"):
        return Path(os.environ["SPINLAB_CACHE"]).expanduser() / "mumax3-skyrmion"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "spinlab" / "mumax3-skyrmion"


def find_mumax3() -> Path:
    """The folder of the traces: ``$SPINLAB_MUMAX3`` if set, else the fetch cache; a
    :class:`DatasetError` says what to do when neither holds them."""
    root = Path(os.environ[MUMAX3_ENV]).expanduser() if os.environ.get(MUMAX3_ENV) else default_cache_dir()
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        where = f"${MUMAX3_ENV} {str(root)!r}" if os.environ.get(MUMAX3_ENV) else f"the cache {root}"
        raise DatasetError(
            f"no MuMax3 traces in {where} (missing {missing[0]}): run `spinlab data fetch mumax3` "
            f"once, or set {MUMAX3_ENV} to a folder holding them"
        )
    return root


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(root: str | Path) -> list[str]:
    """Names of the pinned files that ``root`` lacks or holds in another version."""
    root = Path(root)
    return [n for n, (*_, sha) in FILES.items() if not (root / n).is_file() or sha256_file(root / n) != sha]


def fetch_mumax3(
    destination: str | Path | None = None,
    *,
    force: bool = False,
    opener: Callable[[str], BinaryIO] | None = None,
) -> Path:
    """Download the pinned traces into the cache; files already verified there are kept.
    ``opener`` replaces ``urllib.request.urlopen`` (the tests serve local files)."""
    root = Path(destination).expanduser() if destination else default_cache_dir()
    for name, (commit, upstream, sha) in FILES.items():
        target = root / name
        if target.is_file() and not force and sha256_file(target) == sha:
            continue
        url = f"{_RAW}/{commit}/{upstream}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
            part = Path(tmp.name)
            digest = hashlib.sha256()
            try:
                with (opener or _urlopen)(url) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        tmp.write(block)
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise DatasetError(
                    f"downloading {url} failed: {exc}; check the network, or set {MUMAX3_ENV} to a local copy"
                ) from None
        if digest.hexdigest() != sha:
            part.unlink(missing_ok=True)
            raise DatasetError(
                f"{url}: checksum mismatch (got {digest.hexdigest()[:16]}..., expected {sha[:16]}...); "
                f"the download is corrupt or not commit {commit[:7]}; nothing was installed"
            )
        part.replace(target)
    return root


def _urlopen(url: str):
    return urllib.request.urlopen(url, timeout=60)


__all__ = ["MUMAX3_ENV", "FILES", "REPOSITORY", "default_cache_dir", "find_mumax3", "fetch_mumax3", "verify"]
