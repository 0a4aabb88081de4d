"""What a sweep runs: one plan over a grid (or random / Latin-hypercube samples) of settings,
times seeds, each point a plan config plus a device address, keyed by a hash of both.

Swept names are the plan's own settings (``bias_A``, ``n_nodes``), dotted names reach into a
group of settings (``train.lr`` of twin-train), and ``device.OPTION`` is an option of the device
address (``device.noise`` makes ``sim:vortex?noise=...``). Every point's plan is built here,
before anything runs, so a bad name or value is one clear error and not a failed cluster job.

A point's key hashes the plan name, its full normalised config, the address and the seed: a
re-run of the same sweep recognises the points it has already completed, whatever order or
spelling the command line used.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from spinlab.engine.plan import assign_setting as assign
from spinlab.engine.plan import build_plan
from spinlab.errors import ConfigError
from spinlab.registry import opener_for, parse_address

METHODS = ("grid", "random", "lhs")
DEVICE_PREFIX = "device."
#: In string settings, replaced by the point's key (a file of its own per point: a twin's ``out``).
POINT_PLACEHOLDER = "{point}"
#: Unset settings with this suffix point at the sweep's shared cache (cached features reused).
CACHE_SUFFIX = "_cache_dir"


# --- the command-line syntax ------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """One value as typed: JSON (``6e-3``, ``true``, ``[1e-7, 1e-6]``, ``{"a": 1}``), else a
    plain number (``.5``), else the text itself (``binary``)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def split_values(text: str) -> list[str]:
    """``"1,2,[3,4]"`` -> ``["1", "2", "[3,4]"]``: commas inside brackets, braces or quotes stay."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_assignment(text: str, *, many: bool) -> tuple[str, Any]:
    """``NAME=V1,V2`` -> ``(NAME, [v1, v2])`` (``many``) or ``NAME=V`` -> ``(NAME, v)``."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        example = "NAME=V1,V2,..." if many else "NAME=VALUE"
        raise ConfigError(
            f"{text!r} is not {example} (NAME: a setting of the plan, e.g. bias_A, or "
            "device.OPTION for an option of the device address)"
        )
    if not many:
        return name, parse_value(raw)
    values = [parse_value(v) for v in split_values(raw)]
    if not values:
        raise ConfigError(f"--grid {name} has no values; give them as {name}=V1,V2,...")
    return name, values


# --- points -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One run of the sweep."""

    index: int
    key: str
    values: Mapping[str, Any]  # swept name -> value
    seed: int
    config: Mapping[str, Any]  # the plan's full config as the plan normalised it
    address: str | None


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: ``plan`` on ``device`` over ``grid`` (name -> values) with the fixed
    ``settings``, for ``seeds`` seeds starting at ``seed``. ``samples`` random or
    Latin-hypercube points (``method``) replace the product grid: a numeric name is then sampled
    between the least and the greatest of its values (integers stay integers), any other name
    picks one of its values."""

    plan: str
    device: str | None = None
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    seeds: int = 1
    seed: int = 0
    samples: int | None = None
    method: str = "grid"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS[1:])}, got {self.method!r}")
        if self.samples is not None:
            if self.samples < 1:
                raise ConfigError(f"--samples must be at least 1, got {self.samples}")
            if self.method == "grid":
                object.__setattr__(self, "method", "lhs")
            if not self.grid:
                raise ConfigError("--samples needs at least one --grid NAME=LOW,HIGH to sample from")
        elif self.method != "grid":
            raise ConfigError(f"--method {self.method} needs --samples N")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        both = sorted(set(self.grid) & set(self.settings))
        if both:
            raise ConfigError(f"{both} are both swept (--grid) and fixed (--set); give each name once")
        for name in [*self.grid, *self.settings]:
            if name == DEVICE_PREFIX + "seed":
                raise ConfigError("the device seed is the run seed: sweep it with --seeds N (and --seed S)")
            if name.startswith(DEVICE_PREFIX) and not self.device:
                raise ConfigError(f"{name} is a device option, but the sweep has no --device")
        options = {
            k[len(DEVICE_PREFIX) :]: v for k, v in self.settings.items() if k.startswith(DEVICE_PREFIX)
        }
        if options:  # fixed device options belong to the address
            object.__setattr__(self, "device", _with_options(self.device, options))
            object.__setattr__(
                self, "settings", {k: v for k, v in self.settings.items() if not k.startswith(DEVICE_PREFIX)}
            )
        if self.device is not None:
            opener_for(parse_address(self.device)[0])  # a bad address fails here, not on a worker

    @property
    def station(self) -> str | None:
        """The hardware station the points share (``bench:`` addresses), else None: simulators
        and twins run in parallel."""
        if not self.device:
            return None
        scheme, target, _ = parse_address(self.device)
        return f"bench:{target}" if scheme == "bench" else None

    @property
    def station_resource(self) -> str | None:
        """The Dask worker resource that stands for the station (one unit, one worker)."""
        station = self.station
        if station is None:
            return None
        target = station.partition(":")[2]
        stem = Path(target).stem if target.endswith(".toml") else target
        return "station-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "bench")

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "device": self.device,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "settings": dict(self.settings),
            "seeds": self.seeds,
            "seed": self.seed,
            "samples": self.samples,
            "method": self.method,
        }

    def digest(self) -> str:
        """Short hash of the whole spec (the default sweep directory's name)."""
        return _hash(self.to_dict())[:10]

    def combinations(self) -> list[dict[str, Any]]:
        """The swept values of every point before seeds: the product grid or the samples."""
        names = list(self.grid)
        if self.samples is None:
            return [dict(zip(names, combo)) for combo in itertools.product(*self.grid.values())]
        rng = np.random.default_rng(self.seed)
        if self.method == "lhs":
            from scipy.stats import qmc

            unit = qmc.LatinHypercube(d=len(names), rng=rng).random(self.samples)
        else:
            unit = rng.random((self.samples, len(names)))
        return [{name: _sample(self.grid[name], u) for name, u in zip(names, row)} for row in unit]

    def base_config(self) -> dict[str, Any]:
        """The plan's full config with the fixed settings, and the first value of each swept
        one (a required setting may be swept; every point replaces it), defaults for the rest."""
        config: dict[str, Any] = {}
        for name, value in self.settings.items():
            assign(config, name, value)
        for name, values in self.grid.items():
            if not name.startswith(DEVICE_PREFIX) and values:
                assign(config, name, values[0])
        plan = self._build(config, {})
        if plan.needs_device and not self.device:
            raise ConfigError(f"plan {self.plan!r} needs a device: add --device ADDRESS")
        return plan.config_dict()

    def points(self) -> list[Point]:
        """Every point, its plan built (validated) and its key computed."""
        base = self.base_config()
        points, seen = [], set()
        for combo in self.combinations():
            config = copy.deepcopy(base)
            options = {}
            for name, value in combo.items():
                if name.startswith(DEVICE_PREFIX):
                    options[name[len(DEVICE_PREFIX) :]] = value
                else:
                    assign(config, name, value)
            address = _with_options(self.device, options)
            config = self._build(config, combo).config_dict()
            for seed in range(self.seed, self.seed + self.seeds):
                key = _hash({"plan": self.plan, "config": config, "address": address, "seed": seed})[:12]
                if key in seen:
                    continue  # samples can repeat a combination of listed values
                seen.add(key)
                points.append(
                    Point(
                        len(points),
                        key,
                        dict(combo),
                        seed,
                        _substitute(config, POINT_PLACEHOLDER, key),
                        address,
                    )
                )
        return points

    def _build(self, config: Mapping[str, Any], combo: Mapping[str, Any]) -> Any:
        try:
            return build_plan(self.plan, config)
        except TypeError as exc:  # a required setting is missing, or a group has a wrong name
            raise ConfigError(
                f"plan {self.plan!r}{_at(combo)}: {exc}; give settings with --set NAME=VALUE"
            ) from None
        except ConfigError as exc:
            hint = "; give settings with --set NAME=VALUE" if "Field required" in str(exc) else ""
            if not combo and not hint:
                raise
            raise ConfigError(f"plan {self.plan!r}{_at(combo)}: {exc}{hint}") from None


def with_cache(spec: SweepSpec, cache_dir: str | Path) -> SweepSpec:
    """``spec`` with every unset ``*_cache_dir`` setting of its plan pointing at ``cache_dir``,
    so the points share one cache (spoken-digit features are computed once per data subset)."""
    unset = {
        k: str(cache_dir)
        for k, v in spec.base_config().items()
        if k.endswith(CACHE_SUFFIX) and v is None and k not in spec.grid
    }
    return dataclasses.replace(spec, settings={**spec.settings, **unset}) if unset else spec


# --- helpers ----------------------------------------------------------------------------------
def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _at(combo: Mapping[str, Any]) -> str:
    return f" at {', '.join(f'{k}={v}' for k, v in combo.items())}" if combo else ""


def _with_options(address: str | None, options: Mapping[str, Any]) -> str | None:
    if not options or address is None:
        return address
    scheme, target, query = parse_address(address)
    query.update({k: _option_text(v) for k, v in options.items()})
    return f"{scheme}:{target}?{urlencode(sorted(query.items()))}"


def _option_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _substitute(value: Any, placeholder: str, text: str) -> Any:
    if isinstance(value, str):
        return value.replace(placeholder, text)
    if isinstance(value, dict):
        return {k: _substitute(v, placeholder, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, placeholder, text) for v in value]
    return value


def _sample(values: Sequence[Any], u: float) -> Any:
    """The value at ``u`` in [0, 1) of a name's range: numbers between their extremes
    (integers stay integers), anything else one of the listed values."""
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) == len(values) and len(values) >= 2:
        lo, hi = min(numeric), max(numeric)
        if all(isinstance(v, int) for v in numeric):
            return int(min(hi, lo + np.floor(u * (hi - lo + 1))))
        return float(lo + u * (hi - lo))
    return values[min(len(values) - 1, int(u * len(values)))]


__all__ = [
    "SweepSpec",
    "Point",
    "METHODS",
    "parse_value",
    "parse_assignment",
    "split_values",
    "assign",
    "with_cache",
]
