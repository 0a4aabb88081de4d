"""Twin checkpoints: weights + everything needed to use and audit them, in one file.

The file is a ``torch.save`` of plain containers only (tensors, str, numbers, lists, dicts), so
it loads with ``torch.load(weights_only=True)``: opening a checkpoint never executes code.
Metadata is JSON-able: architecture, normalisation, sample interval, the named inputs (drives
and conditions) with their units and trained ranges, the output's unit and scaling, fitted noise,
and provenance (data source, seeds, NRMSE history, versions).

Format history: 1 had one unnamed drive (scalar drive normalisation, ``drive_unit``); 2 names
every input (``inputs``) and the output (``output``) and keeps one drive normalisation per drive.
Version 1 files still load (their one drive is named ``drive``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from spinlab.engine.documents import package_versions, to_jsonable
from spinlab.errors import CheckpointError, ConfigError
from spinlab.files import MAX_BYTES, check_file
from spinlab.twin.model import SpinNODE, TwinArchitecture

FORMAT = "spinlab-twin"
FORMAT_VERSION = 2
ROLES = ("drive", "condition")
#: Weight dtypes a checkpoint may declare.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Most weights a checkpoint may declare: far above any twin worth training on a CPU, and a
#: bound on what a hostile file can make us allocate.
MAX_PARAMETERS = 2**24
#: Most bytes the members of a checkpoint's zip may declare once decompressed: torch.save stores
#: them uncompressed, so a legitimate checkpoint is no larger inside than outside, while a
#: hostile one could inflate a small file into gigabytes inside torch.load.
MAX_UNPACKED_BYTES = MAX_BYTES["checkpoint"]
#: Samples a twin may settle before each drive: a few relaxation times (default 50, MuMax3 200);
#: each is a model step of every call, so 10^7 made one call run for minutes.
MAX_SETTLE_SAMPLES = 10_000
#: Sample intervals a twin may have (s): 1 fs .. 1 s (MuMax3 twins ~5 ps, bench twins ~100 ns).
DT_RANGE_S = (1e-15, 1.0)


@dataclass
class TwinMeta:
    """Everything about a twin that is not a weight."""

    dt_s: float
    condition_ranges: dict[str, list[float]] = field(default_factory=dict)
    noise_std: float = 0.0  # measured output noise (output units), for optional noise
    settle_samples: int = 50  # samples the twin settles at rest before a drive starts
    rest_drive_V: float | None = None  # drive level while settling (None: the first sample)
    drive_unit: str = "V"
    output_unit: str = "V"
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the twin's inputs in the model's order, drives first: ``{"name", "role" ("drive" or
    #: "condition"), "unit", "range" ([min, max] seen in training, or None), "column" (the
    #: MuMax3 column it was read from, or None), "quantity" (what it is, e.g. "anisotropy")}``
    inputs: list[dict[str, Any]] = field(default_factory=list)
    #: the modelled output: ``{"name", "unit", "column", "offset", "scale"}``; the model works
    #: in ``(y - offset) * scale`` (MuMax3: ``(mz - mz[0]) * 10``), a Device answers in ``y``
    output: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (_is_number(self.dt_s) and DT_RANGE_S[0] <= self.dt_s <= DT_RANGE_S[1]):
            raise ConfigError(
                f"twin dt_s must be a number of seconds in {DT_RANGE_S[0]:g} .. "
                f"{DT_RANGE_S[1]:g}, got {self.dt_s!r}"
            )
        self.dt_s = float(self.dt_s)
        if not (
            isinstance(self.condition_ranges, dict)
            and all(isinstance(name, str) and _is_range(span) for name, span in self.condition_ranges.items())
        ):
            raise ConfigError(
                f"twin condition_ranges must map names to [low, high], got {self.condition_ranges!r}"
            )
        if not (_is_number(self.noise_std) and self.noise_std >= 0):
            raise ConfigError(f"twin noise_std must be a number >= 0, got {self.noise_std!r}")
        if not (
            isinstance(self.settle_samples, int)
            and not isinstance(self.settle_samples, bool)
            and 0 <= self.settle_samples <= MAX_SETTLE_SAMPLES
        ):
            raise ConfigError(
                f"twin settle_samples must be an integer 0..{MAX_SETTLE_SAMPLES}, got {self.settle_samples!r}"
            )
        if not (self.rest_drive_V is None or _is_number(self.rest_drive_V)):
            raise ConfigError(f"twin rest_drive_V must be a number or None, got {self.rest_drive_V!r}")
        if not (
            isinstance(self.drive_unit, str)
            and isinstance(self.output_unit, str)
            and isinstance(self.provenance, dict)
        ):
            raise ConfigError("twin drive_unit/output_unit must be strings and provenance a map")
        if not (isinstance(self.inputs, list) and all(map(_is_input, self.inputs))):
            raise ConfigError(
                f"twin inputs must be a list of {{name, role, unit, range}} maps with role "
                f"one of {ROLES}, got {self.inputs!r}"
            )
        if not (
            isinstance(self.output, dict)
            and all(_is_number(self.output.get(k, 1.0)) for k in ("offset", "scale"))
            and self.output.get("scale", 1.0) != 0
        ):
            raise ConfigError(
                f"twin output must be a map with numeric offset and non-zero scale, got {self.output!r}"
            )

    def input_specs(
        self, drive_names: tuple[str, ...], condition_names: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """The named inputs, drives then conditions; derived for version-1 checkpoints."""
        if self.inputs:
            return [dict(spec) for spec in self.inputs]
        drives = [
            {
                "name": n,
                "role": "drive",
                "unit": self.drive_unit,
                "range": None,
                "column": None,
                "quantity": "voltage" if self.drive_unit == "V" else n,
            }
            for n in drive_names
        ]
        return drives + [
            {
                "name": n,
                "role": "condition",
                "unit": "",
                "column": None,
                "quantity": n,
                "range": self.condition_ranges.get(n),
            }
            for n in condition_names
        ]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_range(span: Any) -> bool:
    return (
        isinstance(span, (list, tuple))
        and len(span) == 2
        and all(map(_is_number, span))
        and span[0] <= span[1]
    )


def _is_input(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and spec.get("role") in ROLES
        and isinstance(spec.get("unit", ""), str)
        and (spec.get("range") is None or _is_range(spec.get("range")))
    )


def save_twin(path: str | Path, model: SpinNODE, meta: TwinMeta) -> Path:
    """Write the checkpoint atomically (a crash never leaves a half-written twin)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    provenance = dict(meta.provenance)
    provenance.setdefault("versions", package_versions())
    provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta_dict = to_jsonable(
        {**asdict(meta), "provenance": provenance, "normalisation": asdict(model.normalisation())}
    )
    json.dumps(meta_dict)  # fail here, not at load time, if something is not JSON-able
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.arch.model_dump(mode="json"),
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
    path = check_file(
        path,
        "checkpoint",
        CheckpointError,
        f"twin checkpoint {path} does not exist; train one with `spinlab twin train`",
    )
    _check_unpacked_size(path)
    try:
        with warnings.catch_warnings():  # torch warns about the odd pickle of a corrupt file
            warnings.simplefilter("ignore")
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
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has no valid checkpoint format version ({version!r}); it is corrupt")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this spinlab reads up to "
            f"{FORMAT_VERSION}: upgrade spinlab"
        )
    try:
        arch = TwinArchitecture(**payload["architecture"])
        _check_size(arch)
        meta_d = dict(payload["meta"])
        meta_d.pop("normalisation", None)
        meta = TwinMeta(**meta_d)
        names = [*arch.drive_names, *arch.condition_names]
        if meta.inputs and [spec["name"] for spec in meta.inputs] != names:
            raise ConfigError(
                f"metadata names inputs {[spec['name'] for spec in meta.inputs]}, the architecture {names}"
            )
        dtype = DTYPES.get(payload.get("dtype", "float32"))
        if dtype is None:
            raise ConfigError(f"weight dtype {payload.get('dtype')!r} is not one of {sorted(DTYPES)}")
        model = SpinNODE(arch).to(dtype)
        model.load_state_dict(_upgrade(dict(payload["state_dict"])), strict=True)
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


def _check_unpacked_size(path: Path) -> None:
    """Refuse, before torch reads it, a file that is not a zip or whose members declare more
    than :data:`MAX_UNPACKED_BYTES` once decompressed (the central directory is all we read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(
            f"{path} is not a readable twin checkpoint (corrupt or truncated file?; "
            f"not the zip archive torch.save writes: {exc}); copy it again or retrain "
            "with `spinlab twin train`"
        ) from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise CheckpointError(
            f"{path} would unpack to {unpacked / 2**20:.0f} MiB; a twin checkpoint "
            f"holds at most {MAX_UNPACKED_BYTES >> 20} MiB: it is not one spinlab wrote"
        )


def _upgrade(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Version 1 kept one scalar drive mean/std; now there is one per drive."""
    for name in ("u_mean", "u_std"):
        if isinstance(state.get(name), torch.Tensor) and state[name].ndim == 0:
            state[name] = state[name].reshape(1)
    return state


def _check_size(arch: TwinArchitecture) -> None:
    sizes = (arch.n_delays, arch.delay_samples, arch.hidden, arch.n_hidden_layers)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        raise ConfigError(f"architecture sizes must be integers, got {sizes}")
    weights = sum((i + 1) * o for i, o in arch.layer_shapes())
    if weights > MAX_PARAMETERS or arch.delay_samples * arch.n_delays > MAX_PARAMETERS:
        raise ConfigError(f"architecture of {weights} weights exceeds {MAX_PARAMETERS}")


__all__ = ["TwinMeta", "save_twin", "load_twin", "FORMAT", "FORMAT_VERSION"]
