"""Twin checkpoints: weights + everything needed to use and audit them, in one file.

The file is a ``torch.save`` of plain containers only (tensors, str, numbers, lists, dicts), so
it loads with ``torch.load(weights_only=True)``: opening a checkpoint never executes code.
Metadata is JSON-able: architecture, normalisation, sample interval, condition names and their
trained ranges, fitted noise, and provenance (data source, seeds, NRMSE history, versions).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from spinlab.errors import CheckpointError, ConfigError
from spinlab.engine.documents import package_versions, to_jsonable
from spinlab.twin.model import SpinNODE, TwinArchitecture

FORMAT = "spinlab-twin"
FORMAT_VERSION = 1


@dataclass
class TwinMeta:
    """Everything about a twin that is not a weight."""

    dt_s: float
    condition_ranges: dict[str, list[float]] = field(default_factory=dict)
    noise_std: float = 0.0          # measured output noise (output units), for optional noise
    settle_samples: int = 50        # samples the twin settles at rest before a drive starts
    rest_drive_V: float | None = None  # drive level while settling (None: the first sample)
    drive_unit: str = "V"
    output_unit: str = "V"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.dt_s, (int, float)) and math.isfinite(self.dt_s) and self.dt_s > 0):
            raise ConfigError(f"twin dt_s must be a positive number, got {self.dt_s!r}")
        self.dt_s = float(self.dt_s)


def save_twin(path: str | Path, model: SpinNODE, meta: TwinMeta) -> Path:
    """Write the checkpoint atomically (a crash never leaves a half-written twin)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    provenance = dict(meta.provenance)
    provenance.setdefault("versions", package_versions())
    provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta_dict = to_jsonable({**asdict(meta), "provenance": provenance,
                             "normalisation": asdict(model.normalisation())})
    json.dumps(meta_dict)  # fail here, not at load time, if something is not JSON-able
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.arch.to_dict(),
        "dtype": str(model.y_mean.dtype).replace("torch.", ""),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta_dict,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_twin(path: str | Path) -> tuple[SpinNODE, TwinMeta]:
    """Read a checkpoint; anything corrupt, foreign or incompatible raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"twin checkpoint {path} does not exist; train one with `spinlab twin train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every flavour
        # torch's own message would advise weights_only=False, i.e. running untrusted pickle code
        raise CheckpointError(
            f"{path} is not a readable twin checkpoint (corrupt or truncated file?; torch.load "
            f"raised {type(exc).__name__}); copy it again or retrain with `spinlab twin train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a spinlab twin checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this spinlab reads up to "
            f"{FORMAT_VERSION}: upgrade spinlab"
        )
    try:
        arch = TwinArchitecture.from_dict(payload["architecture"])
        meta_d = dict(payload["meta"])
        meta_d.pop("normalisation", None)
        meta = TwinMeta(**meta_d)
        dtype = getattr(torch, str(payload.get("dtype", "float32")))
        model = SpinNODE(arch).to(dtype)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, ConfigError) as exc:
        raise CheckpointError(
            f"{path} is incompatible with this spinlab ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.all(torch.isfinite(tensor))):
            raise CheckpointError(f"{path} has non-finite values in {name}; retrain the twin")
    model.eval()
    return model, meta


__all__ = ["TwinMeta", "save_twin", "load_twin", "FORMAT", "FORMAT_VERSION"]
