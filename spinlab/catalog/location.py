"""Where a runs folder's catalog is: ``SPINLAB_CATALOG`` if set (a SQLAlchemy URL, so a lab-wide
PostgreSQL ``postgresql+psycopg://user@host/db`` that several lab PCs share; ``off`` switches
recording off), else ``url = "..."`` in the runs folder's ``catalog.toml``, else the SQLite file
``catalog.sqlite`` in the runs folder (nothing to set up). No database is touched here, so the
engine asks without importing SQLAlchemy."""

from __future__ import annotations

import os
from pathlib import Path

import tomllib

from spinlab.errors import ConfigError

ENV = "SPINLAB_CATALOG"
SQLITE_FILE = "catalog.sqlite"
CONFIG_FILE = "catalog.toml"


def catalog_url(runs_dir: str | Path) -> str | None:
    """The catalog URL of the runs in ``runs_dir``; None when recording is switched off."""
    url = os.environ.get(ENV, "").strip()
    if not url:
        config = Path(runs_dir) / CONFIG_FILE
        if config.is_file():
            try:
                url = str(tomllib.loads(config.read_text()).get("url", "")).strip()
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{config}: {exc}") from None
    if url.lower() in ("off", "none", "no", "0"):
        return None
    return url or f"sqlite:///{(Path(runs_dir) / SQLITE_FILE).absolute()}"


__all__ = ["catalog_url", "ENV", "SQLITE_FILE", "CONFIG_FILE"]
