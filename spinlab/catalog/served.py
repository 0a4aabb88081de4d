"""`spinlab runs serve`: the catalog's runs over HTTP as a Tiled tree, read-only.

Why Tiled: a laptop opens a lab PC's runs with the Tiled client (``tiled.client.from_uri``) and
slices traces remotely without copying run directories, the way a Bluesky lab reads its own data.
The tree is ``/<run id>/<the run file's groups and datasets>`` (``/<id>/sweep/responses``), each
run's metadata its catalog row. Tiled's single-user API key is the authentication; the server
binds 127.0.0.1 unless told otherwise. The list of runs is the catalog's when the server starts.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RUN_FILE = "run.h5"


class _Runs(Mapping[str, Any]):
    """Run id -> a Tiled adapter over its run file, built when asked for (reads only the file's
    structure)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = {r["id"]: r for r in rows if r.get("path") and (Path(r["path"]) / RUN_FILE).is_file()}

    def __getitem__(self, key: str) -> Any:
        from tiled.adapters.hdf5 import HDF5Adapter, h5open, parse_hdf5_tree

        row = self._rows[key]
        path = Path(row["path"]) / RUN_FILE
        with h5open(path, locking=False) as file:
            tree = parse_hdf5_tree(file)
        metadata = json.loads(json.dumps({k: v for k, v in row.items() if k != "identity"}, default=str))
        return HDF5Adapter(tree, path.absolute().as_uri(), metadata=metadata, locking=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def tree(runs_dir: str | Path) -> Any:
    """The Tiled tree of the catalogued runs of ``runs_dir`` (newest first)."""
    from tiled.adapters.mapping import MapAdapter

    from spinlab.catalog.store import Catalog

    rows = Catalog.for_runs(runs_dir, create=False).search()
    return MapAdapter(_Runs(rows), metadata={"spinlab_runs_dir": str(Path(runs_dir).absolute())})


def app(runs_dir: str | Path, api_key: str) -> Any:
    """The ASGI app: the tree behind Tiled's single-user API key (read-only: a MapAdapter over
    files offers no writes)."""
    from spinlab.errors import ConfigError

    try:
        from tiled.config import Authentication
        from tiled.server.app import build_app
    except ImportError as exc:
        raise ConfigError(f"spinlab runs serve needs Tiled ({exc}): pip install 'spinlab[serve]'") from None
    if not api_key.isalnum():
        raise ConfigError(
            "the API key must be letters and digits only "
            "(make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return build_app(tree(runs_dir), authentication=Authentication(single_user_api_key=api_key))


def new_api_key() -> str:
    return secrets.token_hex(32)


def serve(asgi: Any, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve :func:`app`'s result until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.run(asgi, host=host, port=port, log_level="warning")


__all__ = ["tree", "app", "serve", "new_api_key"]
