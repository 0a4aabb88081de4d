"""Fitted physical models as files that open as devices: ``sim:PATH.json``.

``spinlab fit-physics`` writes one small JSON file per fit: which simulator it is, the options
that rebuild it (parameter values, drive gain, default conditions, limits, ...) and where the
values came from (run, method, uncertainties, loss). :func:`~spinlab.sim_backends.open_simulator`
opens such a file when the simulator name is a path, so every protocol runs on a fitted model
and options in the address still override the file's (``sim:fit.json?noise=0``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spinlab.errors import ConfigError, DeviceAddressError
from spinlab.files import check_file

FORMAT = "spinlab-physics-model"
FORMAT_VERSION = 1


def is_model_path(name: str) -> bool:
    """Whether a ``sim:`` target names a model file rather than a built-in simulator."""
    text = str(name).strip()
    return text.lower().endswith(".json") or "/" in text or os.sep in text


def save_model(
    path: str | Path, simulator: str, options: Mapping[str, Any], provenance: Mapping[str, Any]
) -> Path:
    """Write the model file atomically; ``options`` must be plain numbers/strings (address options)."""
    path = Path(path)
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model option {name} is not finite ({value}); refusing to write {path}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "simulator": simulator,
        "options": dict(options),
        "provenance": dict(provenance),
    }
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def load_model(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(simulator, options, provenance)`` of a model file; anything else is refused."""
    path = check_file(
        path,
        "model",
        DeviceAddressError,
        f"model file {str(path)!r} does not exist; write one with "
        "`spinlab fit-physics RUN_DIR ...` or use sim:vortex / sim:macrospin",
    )
    try:
        payload = json.loads(path.read_text())
    except RecursionError:
        raise ConfigError(f"model file {path} nests its JSON too deeply to be a fitted model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model file {path} is not readable JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a spinlab physics model (expected format {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} has model format version {payload.get('format_version')!r}; "
            f"this spinlab reads version {FORMAT_VERSION}"
        )
    options, provenance = payload.get("options"), payload.get("provenance", {})
    if not isinstance(payload.get("simulator"), str) or not isinstance(options, dict):
        raise ConfigError(f"model file {path} lacks its simulator name or options")
    for name, value in options.items():
        if not _is_option(value):
            raise ConfigError(
                f"model file {path}: option {name!r} = {str(value)[:80]} is not a string, a "
                "finite number or a 64-bit integer, as `spinlab fit-physics` writes them"
            )
    return payload["simulator"], options, provenance if isinstance(provenance, dict) else {}


def _is_option(value: Any) -> bool:
    """What an address option can be: a string, a boolean, a finite float or a 64-bit integer."""
    if isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


__all__ = ["FORMAT", "FORMAT_VERSION", "is_model_path", "save_model", "load_model"]
