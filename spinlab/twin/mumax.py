"""MuMax3 tables (``table.txt``) and how one becomes the twin's trajectories."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BeforeValidator, Field, model_validator

from spinlab.config import Config, NonNegative, NonNegativeInt, PositiveInt
from spinlab.errors import ConfigError
from spinlab.files import check_file
from spinlab.twin.trajectory import Trajectory


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
                f"column {name!r} is not in {self.path or 'the table'}; available: {list(self.columns)}"
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
MUMAX_QUANTITIES = {
    "Ku1": ("anisotropy", "ku"),
    "Ku2": ("anisotropy", "ku2"),
    "Dind": ("DMI", "dmi"),
    "Dbulk": ("bulk DMI", "dbulk"),
    "Aex": ("exchange stiffness", "aex"),
    "Msat": ("saturation magnetisation", "msat"),
    "alpha": ("damping", "alpha"),
    "B_ext": ("field", "field"),
}


def condition_name(column: str, unit: str) -> str:
    """The clean condition name of a MuMax3 column: short name and unit (``dmi_J_m2``)."""
    base = column.split(".")[0]
    short = MUMAX_QUANTITIES.get(base, ("", re.sub(r"\W+", "_", base).strip("_").lower()))[1]
    unit_part = re.sub(r"[^0-9A-Za-z]+", "_", unit).strip("_")
    return f"{short}_{unit_part}" if unit_part else short


def require_columns(table: MumaxTable, columns: Sequence[str], needed_by: str) -> None:
    """One clear error naming every column ``needed_by`` needs that the table lacks."""
    missing = [c for c in columns if c.split(" (")[0].strip() not in table.columns]
    if missing:
        raise ConfigError(
            f"{table.path or 'the table'} lacks column(s) {missing} that {needed_by} "
            f"needs; it has {list(table.columns)}"
        )


def _columns(value: object) -> object:
    """One column name given alone is a one-column tuple."""
    return (value,) if isinstance(value, str) else value


Columns = Annotated[tuple[str, ...], BeforeValidator(_columns)]


class MumaxSplit(Config):
    """How a MuMax3 table becomes training/validation/test trajectories (paper defaults).

    ``drives`` are fast inputs (each at the twin's delays, interpolated between samples),
    ``conditions`` slow ones (their present value, held over each step), both column names."""

    drives: Columns = Field(("Ku1.region100",), description="Table columns that drive the twin (fast inputs)")
    conditions: Columns = Field((), description="Table columns that are slow operating conditions")
    output_column: str = Field("mz", description="Table column the twin predicts")
    every: PositiveInt = Field(2, description="Keep every Nth row (5 ps from 2.5 ps)")
    resample_dt_s: NonNegative | None = Field(
        None, description="Interpolate onto this uniform grid instead (none or 0: keep every Nth row)"
    )
    discard: NonNegativeInt = Field(1500, description="Transient dropped, in kept samples")
    n_train: int = Field(10000, ge=2, description="Training samples (validation is the tail of these)")
    n_val: NonNegativeInt = Field(
        2000, description="Validation samples held out from the end of the training span"
    )
    n_test: int | None = Field(
        None, ge=2, description="Test samples after the training span (none: all the rest)"
    )
    output_offset: Literal["first", "none"] = Field(
        "first", description="Subtract the output's first value (first) or nothing (none)"
    )
    output_scale: float = Field(10.0, description="Factor the output is multiplied by (non-zero)")

    @model_validator(mode="after")
    def _consistent(self) -> MumaxSplit:
        columns = self.drives + self.conditions + (self.output_column,)
        if not self.drives or len(set(columns)) != len(columns):
            raise ValueError(
                f"a MuMax3 twin needs at least one drive column and distinct columns, "
                f"got drives {list(self.drives)}, conditions {list(self.conditions)}, "
                f"output {self.output_column!r}"
            )
        if self.n_val >= self.n_train:
            raise ValueError(f"n_val ({self.n_val}) must be smaller than n_train ({self.n_train})")
        if self.output_scale == 0:
            raise ValueError("output_scale must be a finite non-zero number, got 0")
        return self

    def condition_names(self, table: MumaxTable) -> tuple[str, ...]:
        return tuple(condition_name(c, table.unit(c)) for c in self.conditions)


#: The paper's split (a frozen model: one instance shared as the default argument).
DEFAULT_SPLIT = MumaxSplit()


def mumax_series(
    table: MumaxTable, split: MumaxSplit = DEFAULT_SPLIT, *, output_offset: float | None = None
) -> tuple[Trajectory, float]:
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
    y = (y[split.discard :] - output_offset) * split.output_scale
    inputs = [v[split.discard :] for v in inputs]
    n_drives = len(split.drives)
    return Trajectory(
        np.stack(inputs[:n_drives]), y, dt, dict(zip(split.condition_names(table), inputs[n_drives:]))
    ), output_offset


def mumax_trajectories(
    table: MumaxTable, split: MumaxSplit = DEFAULT_SPLIT
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
