"""Training data for the twin: trajectories, normalisation, segment sampling, MuMax3 tables.

A :class:`Trajectory` is one recorded drive -> response pair (a device recording, or a slice
of a micromagnetic simulation): one or several drives, and conditions that are either fixed for
the recording or, like a slowly modulated material parameter, one value per sample. Training draws many short random
segments from them (Chen et al.: ~50 segments x ~20 points a step); validation integrates whole
held-out trajectories and scores them with the NRMSE.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from spinlab.errors import ConfigError
from spinlab.files import check_file
from spinlab.twin.model import Normalisation, SpinNODE


@dataclass
class Trajectory:
    """One drive/response pair on a uniform grid.

    ``drive`` is ``(n,)`` (one drive) or ``(D, n)`` (D drives); each condition is a number (the
    same for the whole recording) or ``(n,)`` values (a slow input, held over each step).
    ``initial`` says how a free-running prediction of it must start: ``"measured"`` (from its
    first samples, e.g. a slice out of a longer simulation) or ``"rest"`` (the device sat at
    rest with the drive at 0 before the recording started, as every ``Device.respond`` does).
    """

    drive: np.ndarray
    response: np.ndarray
    dt_s: float
    conditions: dict[str, float | np.ndarray] = field(default_factory=dict)
    initial: str = "measured"

    def __post_init__(self) -> None:
        drive = np.asarray(self.drive, dtype=np.float64)
        self.drive = drive if drive.ndim == 2 and drive.shape[0] > 1 else drive.reshape(-1)
        self.response = np.asarray(self.response, dtype=np.float64).reshape(-1)
        if self.drive.shape[-1] != self.response.size:
            raise ConfigError(
                f"drive and response lengths differ ({self.drive.shape[-1]} vs {self.response.size})"
            )
        if not (np.all(np.isfinite(self.drive)) and np.all(np.isfinite(self.response))):
            raise ConfigError("trajectory has non-finite samples")
        if self.initial not in ("measured", "rest"):
            raise ConfigError(f"initial must be 'measured' or 'rest', got {self.initial!r}")
        conditions: dict[str, float | np.ndarray] = {}
        for name, value in self.conditions.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.size == 1:
                conditions[name] = float(arr.reshape(-1)[0])
            elif arr.shape == (self.n,) and np.all(np.isfinite(arr)):
                conditions[name] = arr
            else:
                raise ConfigError(f"condition {name} must be a number or {self.n} finite values, "
                                  f"got shape {arr.shape}")
        self.conditions = conditions

    @property
    def n(self) -> int:
        return int(self.response.size)

    @property
    def drives(self) -> np.ndarray:
        """``(D, n)``, also for one drive."""
        return self.drive.reshape(-1, self.n)

    @property
    def varying(self) -> bool:
        """Whether a condition changes within the recording."""
        return any(isinstance(v, np.ndarray) for v in self.conditions.values())

    def condition_series(self, names: Sequence[str]) -> np.ndarray:
        """``(n, C)``: every condition at every sample."""
        return np.stack([np.broadcast_to(_condition(self, name), self.n) for name in names], axis=-1) \
            if names else np.zeros((self.n, 0))

    def span(self, start: int, stop: int) -> "Trajectory":
        """Samples ``start:stop`` (a held-out span, a validation span)."""
        return replace(self, drive=self.drive[..., start:stop], response=self.response[start:stop],
                       conditions={k: v[start:stop] if isinstance(v, np.ndarray) else v
                                   for k, v in self.conditions.items()})


def nrmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """RMSE divided by the standard deviation of the true signal (pooled over everything)."""
    prediction, truth = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    std = float(np.std(truth))
    if std == 0:
        raise ConfigError("NRMSE is undefined for a constant true signal")
    return float(np.sqrt(np.mean((prediction - truth) ** 2)) / std)


def estimate_noise_std(y: np.ndarray) -> float:
    """White measurement-noise std from the second difference, robust to steps (MAD).

    For white noise e, the second difference has variance 6 var(e); a slow signal barely
    contributes and occasional steps are ignored by the median."""
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[None]
    d2 = np.diff(y, n=2, axis=-1).reshape(-1)
    if d2.size == 0:
        return 0.0
    mad = float(np.median(np.abs(d2 - np.median(d2))))
    return mad / 0.6745 / math.sqrt(6.0)


def fit_normalisation(trajectories: Sequence[Trajectory],
                      condition_names: Sequence[str]) -> Normalisation:
    """Mean/std of output, drive(s) and conditions over the training trajectories (every
    sample counts once)."""
    if not trajectories:
        raise ConfigError("no training data to fit the normalisation on")
    y = np.concatenate([t.response for t in trajectories])
    u = np.concatenate([t.drives for t in trajectories], axis=1)
    c = np.concatenate([t.condition_series(condition_names) for t in trajectories])
    c_mean = [float(v) for v in c.mean(axis=0)]
    c_std = [float(s) if s > 0 else max(abs(m), 1.0) for m, s in zip(c_mean, c.std(axis=0))]
    y_std = float(np.std(y))
    u_mean = [float(v) for v in u.mean(axis=1)]
    u_std = [float(s) if s > 0 else 1.0 for s in u.std(axis=1)]
    one = len(u_mean) == 1
    return Normalisation(float(np.mean(y)), y_std if y_std > 0 else 1.0, u_mean[0] if one else u_mean,
                         u_std[0] if one else u_std, c_mean, c_std)


def drive_ranges(trajectories: Sequence[Trajectory]) -> list[list[float]]:
    """[min, max] of every drive seen in training."""
    u = np.concatenate([t.drives for t in trajectories], axis=1)
    return [[float(lo), float(hi)] for lo, hi in zip(u.min(axis=1), u.max(axis=1))]


def condition_ranges(trajectories: Sequence[Trajectory],
                     condition_names: Sequence[str]) -> dict[str, list[float]]:
    """[min, max] of every condition seen in training (the twin warns outside it)."""
    return {n: [float(min(np.min(_condition(t, n)) for t in trajectories)),
                float(max(np.max(_condition(t, n)) for t in trajectories))] for n in condition_names}


def _condition(t: Trajectory, name: str) -> float | np.ndarray:
    try:
        return t.conditions[name]
    except KeyError:
        raise ConfigError(
            f"trajectory lacks condition {name!r} (has {sorted(t.conditions)})"
        ) from None


class SegmentSampler:
    """Random short segments of normalised, delay-embedded training data.

    Everything is embedded once (one big tensor for all trajectories); a batch is a gather of
    ``n_segments`` windows that never cross a trajectory boundary. ``extend`` adds trajectories
    as they arrive (the online trainer)."""

    def __init__(self, model: SpinNODE, segment_samples: int, seed: int = 0) -> None:
        if segment_samples < 1:
            raise ConfigError(f"segment_samples must be >= 1, got {segment_samples}")
        self.model = model
        self.segment_samples = int(segment_samples)
        device = model.y_mean.device  # the data lives where the model trains: no copy per step
        self.generator = torch.Generator(device).manual_seed(int(seed))
        k = model.arch.n_delays
        like = {"dtype": model.y_mean.dtype, "device": device}
        self._x = torch.zeros(0, k, **like)
        self._u = torch.zeros(0, model.arch.n_drive_features, **like)
        self._c = torch.zeros(0, len(model.arch.condition_names), **like)
        self._starts = torch.zeros(0, dtype=torch.long, device=device)
        self.n_samples = 0
        self._varying = False  # some condition changes within a recording: per-sample values

    def extend(self, trajectories: Iterable[Trajectory]) -> None:
        xs, us, cs, starts = [self._x], [self._u], [self._c], [self._starts]
        offset = self._x.shape[0]
        hist = self.model.arch.history_samples
        like = {"dtype": self._x.dtype, "device": self._x.device}
        with torch.no_grad():
            for t in trajectories:
                y = self.model.norm_output(torch.as_tensor(t.response, **like))[None]
                u = self.model.norm_drive(torch.as_tensor(t.drive, **like)[None])
                c = torch.as_tensor(t.condition_series(self.model.arch.condition_names), **like)
                xs.append(self.model.embed_output(y)[0])
                us.append(self.model.delay_features(u)[0])
                cs.append(self.model.norm_conditions(c))
                self._varying = self._varying or t.varying
                last = t.n - 1 - self.segment_samples
                if last >= hist - 1:
                    starts.append(torch.arange(hist - 1, last + 1, device=like["device"]) + offset)
                offset += t.n
                self.n_samples += t.n
        self._x, self._u, self._c = torch.cat(xs), torch.cat(us), torch.cat(cs)
        self._starts = torch.cat(starts)

    @property
    def n_windows(self) -> int:
        return int(self._starts.numel())

    def sample(self, n_segments: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x0 (B,k), u_feat (B,L+1,Dk), c, x_true (B,L,k))``, normalised; ``c`` is
        ``(B,C)``, or ``(B,L+1,C)`` when some condition changes within a recording."""
        if self.n_windows == 0:
            raise ConfigError(
                f"no training window of {self.segment_samples + 1} samples fits in the data; "
                "use fewer --segment-samples or longer recordings"
            )
        device = self._starts.device
        pick = torch.randint(self.n_windows, (n_segments,), generator=self.generator, device=device)
        start = self._starts[pick]
        idx = start[:, None] + torch.arange(self.segment_samples + 1, device=device)
        x = self._x[idx]
        return x[:, 0], self._u[idx], self._c[idx] if self._varying else self._c[start], x[:, 1:]


def predict(model: SpinNODE, trajectories: Sequence[Trajectory], *, settle_samples: int = 0,
            rest_drive: float | None = None) -> list[np.ndarray]:
    """Free-running predictions of whole trajectories (batched by length and start kind).

    Returns one array per trajectory on its full grid; for ``initial="measured"`` the first
    ``history_samples - 1`` entries are the measured history itself."""
    return _predict_levels(model, trajectories, settle_samples, (rest_drive,))[0]


def _predict_levels(model: SpinNODE, trajectories: Sequence[Trajectory], settle_samples: int,
                    rest_drives: Sequence[float | None]) -> list[list[np.ndarray]]:
    """:func:`predict` for several settle levels at once: one batched simulation per group of
    trajectories of one length and start kind, every level in the same batch."""
    levels = len(rest_drives)
    out: list[list[np.ndarray | None]] = [[None] * len(trajectories) for _ in rest_drives]
    hist = model.arch.history_samples
    groups: dict[tuple[int, str], list[int]] = {}
    for i, t in enumerate(trajectories):
        groups.setdefault((t.n, t.initial), []).append(i)
    dtype = model.y_mean.dtype
    names = model.arch.condition_names
    for (n, initial), members in groups.items():
        group = [trajectories[i] for i in members]
        drive = torch.as_tensor(np.stack([t.drive for t in group]), dtype=dtype)
        resp = np.stack([t.response for t in group])
        if any(t.varying for t in group):  # per-sample conditions (B, n, C)
            cond = torch.as_tensor(np.stack([t.condition_series(names) for t in group]), dtype=dtype)
        else:
            cond = model.condition_tensor({name: [t.conditions[name] for t in group] for name in names},
                                          len(members))
        if initial == "measured":
            if n < hist:
                raise ConfigError(f"trajectory of {n} samples is shorter than the twin's history of "
                                  f"{hist} samples; use longer drives (or fewer --delays/--delay-samples)")
            y = model.simulate(drive[..., hist - 1:], cond[:, hist - 1:] if cond.ndim == 3 else cond,
                               y_history=torch.as_tensor(resp[:, :hist], dtype=dtype))
            pred = np.concatenate([resp[:, : hist - 1], y.cpu().double().numpy()], axis=1)
            preds = [pred] * levels  # the measured start does not settle
        else:
            rest = torch.cat([drive[..., 0] if level is None
                              else torch.full(drive.shape[:-1], level, dtype=dtype)
                              for level in rest_drives])
            again = (levels,) + (1,) * (drive.ndim - 1)
            y = model.simulate(drive.repeat(*again), cond.repeat(levels, *(1,) * (cond.ndim - 1)),
                               settle_samples=settle_samples, rest_drive=rest)
            preds = y.cpu().double().numpy().reshape(levels, len(members), n)
        for level, pred in enumerate(preds):
            for j, i in enumerate(members):
                out[level][i] = pred[j]
    return out  # type: ignore[return-value]


def trajectory_nrmse(model: SpinNODE, trajectories: Sequence[Trajectory], *,
                     settle_samples: int = 0, rest_drive: float | None = None) -> float:
    """Pooled NRMSE of free-running predictions over the samples actually predicted."""
    return nrmse_per_rest_level(model, trajectories, settle_samples=settle_samples,
                                rest_drives=(rest_drive,))[0]


def nrmse_per_rest_level(model: SpinNODE, trajectories: Sequence[Trajectory], *,
                         settle_samples: int, rest_drives: Sequence[float | None]) -> list[float]:
    """:func:`trajectory_nrmse` for each settle level (None: the drive's first sample), from
    one batched simulation."""
    hist = model.arch.history_samples
    truth = np.concatenate([t.response[hist if t.initial == "measured" else 0:] for t in trajectories])
    scores = []
    for preds in _predict_levels(model, trajectories, settle_samples, rest_drives):
        p = [pred[hist if t.initial == "measured" else 0:] for t, pred in zip(trajectories, preds)]
        scores.append(nrmse(np.concatenate(p), truth))
    return scores


# --- MuMax3 tables ---------------------------------------------------------------------------
@dataclass
class MumaxTable:
    """A MuMax3 ``table.txt``: columns by name, their units, and the source path."""

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    path: str = ""

    def unit(self, name: str) -> str:
        return self.units.get(name.split(" (")[0].strip(), "")

    def column(self, name: str) -> np.ndarray:
        """A column by its name with or without the unit (``"mz"``, ``"t (s)"``)."""
        key = name.split(" (")[0].strip()
        if key not in self.columns:
            raise ConfigError(
                f"column {name!r} is not in {self.path or 'the table'}; available: "
                f"{list(self.columns)}"
            )
        return self.columns[key]

    @property
    def time_s(self) -> np.ndarray:
        return self.column("t")


def load_mumax_table(path: str | Path) -> MumaxTable:
    """Parse a MuMax3 table (tab separated, ``# name (unit)`` header line)."""
    path = check_file(path, "mumax", ConfigError)
    with path.open(errors="replace") as fh:
        header = fh.readline(1 << 16)
    if not header.startswith("#"):
        raise ConfigError(f"{path} has no MuMax3 '#' header line")
    names, units = [], {}
    for field_ in header.lstrip("#").strip().split("\t"):
        field_ = field_.strip()
        name, _, unit = field_.partition(" (")
        names.append(name.strip())
        units[name.strip()] = unit.rstrip(")").strip()
    try:
        data = np.loadtxt(path, comments="#", delimiter="\t", dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse MuMax3 table {path}: {str(exc)[:200]}") from None
    if data.shape[1] != len(names):
        raise ConfigError(f"{path}: header names {len(names)} columns, rows have {data.shape[1]}")
    if "t" not in names:
        raise ConfigError(f"{path} has no time column 't (s)'")
    return MumaxTable({n: data[:, i] for i, n in enumerate(names)}, units, str(path))


#: Well-known MuMax3 parameters: what they are (a Device's drive quantity) and a short name
#: (a twin's condition names, e.g. ``Dind.region100`` in J/m2 -> ``dmi_J_m2``).
MUMAX_QUANTITIES = {"Ku1": ("anisotropy", "ku"), "Ku2": ("anisotropy", "ku2"), "Dind": ("DMI", "dmi"),
                    "Dbulk": ("bulk DMI", "dbulk"), "Aex": ("exchange stiffness", "aex"),
                    "Msat": ("saturation magnetisation", "msat"), "alpha": ("damping", "alpha"),
                    "B_ext": ("field", "field")}


def condition_name(column: str, unit: str) -> str:
    """The clean condition name of a MuMax3 column: short name and unit (``dmi_J_m2``)."""
    base = column.split(".")[0]
    short = MUMAX_QUANTITIES.get(base, ("", re.sub(r"\W+", "_", base).strip("_").lower()))[1]
    unit_part = re.sub(r"[^0-9A-Za-z]+", "_", unit).strip("_")
    return f"{short}_{unit_part}" if unit_part else short


def require_columns(table: "MumaxTable", columns: Sequence[str], needed_by: str) -> None:
    """One clear error naming every column ``needed_by`` needs that the table lacks."""
    missing = [c for c in columns if c.split(" (")[0].strip() not in table.columns]
    if missing:
        raise ConfigError(f"{table.path or 'the table'} lacks column(s) {missing} that {needed_by} "
                          f"needs; it has {list(table.columns)}")


@dataclass(frozen=True)
class MumaxSplit:
    """How a MuMax3 table becomes training/validation/test trajectories (paper defaults).

    ``drives`` are fast inputs (each at the twin's delays, interpolated between samples),
    ``conditions`` slow ones (their present value, held over each step), both column names."""

    drives: tuple[str, ...] = ("Ku1.region100",)
    conditions: tuple[str, ...] = ()
    output_column: str = "mz"
    every: int = 2              # keep every Nth row (5 ps from 2.5 ps)
    resample_dt_s: float | None = None   # or interpolate onto this uniform grid instead
    discard: int = 1500         # transient, in kept samples
    n_train: int = 10000        # training samples (validation is the tail of these)
    n_val: int = 2000           # held out from the end of the training span
    n_test: int | None = None   # test samples after the training span (None: all the rest)
    output_offset: str = "first"   # subtract mz[0] ("first") or nothing ("none")
    output_scale: float = 10.0

    def __post_init__(self) -> None:
        for name in ("drives", "conditions"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        columns = self.drives + self.conditions + (self.output_column,)
        if not self.drives or len(set(columns)) != len(columns):
            raise ConfigError(f"a MuMax3 twin needs at least one drive column and distinct columns, "
                              f"got drives {list(self.drives)}, conditions {list(self.conditions)}, "
                              f"output {self.output_column!r}")
        if self.every < 1 or self.discard < 0 or self.n_train < 2 or self.n_val < 0:
            raise ConfigError(
                f"invalid MuMax3 split {self}: need every >= 1, discard >= 0, n_train >= 2 and "
                "n_val >= 0 (--every, --discard, --train-points, --val-points)"
            )
        if self.n_test is not None and self.n_test < 2:
            raise ConfigError(f"n_test must be >= 2 or None, got {self.n_test}")
        if self.n_val >= self.n_train:
            raise ConfigError(f"n_val ({self.n_val}) must be smaller than n_train ({self.n_train})")
        if self.output_offset not in ("first", "none"):
            raise ConfigError(f"output_offset must be 'first' or 'none', got {self.output_offset!r}")
        if not (math.isfinite(self.output_scale) and self.output_scale != 0):
            raise ConfigError(f"output_scale must be a finite non-zero number, got {self.output_scale}")

    def condition_names(self, table: "MumaxTable") -> tuple[str, ...]:
        return tuple(condition_name(c, table.unit(c)) for c in self.conditions)


def mumax_series(table: MumaxTable, split: MumaxSplit = MumaxSplit(), *,
                 output_offset: float | None = None) -> tuple[Trajectory, float]:
    """The whole table as one trajectory on the twin's grid, and the output offset used.

    Decimates (or resamples), scales the output as ``(y - offset) * scale`` (offset: the given
    one, e.g. the training table's, else ``y[0]`` or 0 as ``split`` says) and drops the
    transient. Drives are the ``split.drives`` columns, conditions the ``split.conditions``
    columns under their clean names (one value per sample)."""
    require_columns(table, (*split.drives, *split.conditions, split.output_column), "this twin")
    t = table.time_s
    inputs = [table.column(c) for c in (*split.drives, *split.conditions)]
    y = table.column(split.output_column)
    if split.resample_dt_s:
        grid = np.arange(t[0], t[-1], split.resample_dt_s)
        inputs, y = [np.interp(grid, t, v) for v in inputs], np.interp(grid, t, y)
        dt = float(split.resample_dt_s)
    else:
        inputs, y = [v[:: split.every] for v in inputs], y[:: split.every]
        dt = float(np.mean(np.diff(t))) * split.every
    if output_offset is None:
        output_offset = float(y[0]) if split.output_offset == "first" else 0.0
    y = (y[split.discard:] - output_offset) * split.output_scale
    inputs = [v[split.discard:] for v in inputs]
    n_drives = len(split.drives)
    return Trajectory(np.stack(inputs[:n_drives]), y, dt,
                      dict(zip(split.condition_names(table), inputs[n_drives:]))), output_offset


def mumax_trajectories(table: MumaxTable, split: MumaxSplit = MumaxSplit()
                       ) -> tuple[Trajectory, Trajectory | None, Trajectory]:
    """(train, validation or None, test) trajectories from a MuMax3 table (see
    :func:`mumax_series`), split in time: train | validation | test (``n_test`` samples, or
    the rest).

    Note on the bundled skyrmion table: about 10,500 samples after the paper's training span
    (t ~ 110 ns) the skyrmion annihilates and mz jumps to ~0.98 with almost no response; a twin
    trained on the skyrmion state cannot know that state, so score it on ``n_test`` samples
    before the annihilation (10,000 = the next 50 ns) and report the rest separately."""
    series, _ = mumax_series(table, split)
    if series.n < split.n_train + 2:
        raise ConfigError(
            f"{table.path}: only {series.n} samples after the transient, need more than "
            f"n_train = {split.n_train}; lower --train-points or --discard"
        )
    n_fit = split.n_train - split.n_val
    train = series.span(0, n_fit)
    val = series.span(n_fit, split.n_train) if split.n_val else None
    end = None if split.n_test is None else split.n_train + split.n_test
    return train, val, series.span(split.n_train, end or series.n)


def truncate_table(table: MumaxTable, rows: int) -> MumaxTable:
    """The first ``rows`` rows (fast tests)."""
    return MumaxTable({k: v[:rows] for k, v in table.columns.items()}, dict(table.units), table.path)


__all__ = [
    "Trajectory", "nrmse", "estimate_noise_std", "fit_normalisation", "condition_ranges",
    "SegmentSampler", "predict", "trajectory_nrmse", "nrmse_per_rest_level", "MumaxTable", "load_mumax_table",
    "MumaxSplit", "mumax_series", "mumax_trajectories", "truncate_table", "condition_name",
    "require_columns", "drive_ranges", "MUMAX_QUANTITIES",
]
