"""Where should the device run: a Bayesian search of any plan's result over its operating point.

``spinlab optimise PLAN --device ADDRESS --over bias_A,field_T --objective memory_capacity``:
each evaluation is a normal run of ``PLAN`` (a stage of this run, with its own run file under
``stages/``) at one point of the box ``bounds`` (within the device's safety limits), and its
scalar result ``objective`` is what the search maximises (or minimises). Points come from a
Sobol design, then from noisy expected improvement on a Gaussian process
(:mod:`spinlab.analysis.bayesopt`, BoTorch), until ``budget`` device evaluations or ``time_budget_s``.

Screening (``screen``: a twin or simulator address): ``screen_budget`` evaluations on the stand-in
first (Sobol, then BO), then the device starts at the stand-in's predicted best and continues with
a multi-task GP over both, so device time is spent where the stand-in says it pays.

Resumable like every plan: each proposed point is a recorded step before its stage runs, so a
resumed search replays the same points, reads back the completed stages and resumes the
unfinished one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, model_validator

from spinlab.analysis import bayesopt
from spinlab.config import Config, NonNegativeInt, Positive, PositiveInt
from spinlab.device import Device
from spinlab.engine import Plan, RunContext
from spinlab.engine.plan import Shortcut, command, make_config
from spinlab.errors import ConfigError

#: Settings limited by the device's safety limits (name -> the limit's attribute).
LIMITED = {"bias_A": "max_bias_A", "field_T": "max_field_T"}


class SearchConfig(Config):
    """What to search, over what, for how long."""

    plan: str = Field(description="The plan whose result is optimised (e.g. reservoir-measures)")
    over: tuple[str, ...] = Field(description="Settings of the plan to search (e.g. bias_A,field_T)")
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="NAME -> (low, high) of each searched setting; bias_A and field_T default to "
        "their safety limits' range",
    )
    log_scale: tuple[str, ...] = Field((), description="Settings searched on a log scale (e.g. theta_s)")
    objective: str = Field(description="The run's scalar result to optimise (a key of its summary)")
    minimise: bool = Field(False, description="Minimise the objective instead of maximising it")
    budget: PositiveInt = Field(30, description="Evaluations on the device")
    initial: PositiveInt | None = Field(
        None, description="Sobol points before the model chooses (none: 2 per setting, at least 4)"
    )
    time_budget_s: Positive | None = Field(None, description="Stop starting evaluations after this long")
    settings: dict[str, Any] = Field(default_factory=dict, description="Fixed settings of every evaluation")
    screen: str | None = Field(None, description="A stand-in (twin:PATH, sim:...) evaluated first")
    screen_budget: NonNegativeInt = Field(30, description="Evaluations on the stand-in")

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        if not self.over:
            raise ValueError("over must name at least one setting to search")
        for name in (*self.bounds, *self.log_scale):
            if name not in self.over:
                raise ValueError(
                    f"{name!r} has bounds or a log scale but is not searched (over: {self.over})"
                )
        for name, (low, high) in self.bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"bounds of {name} must be two finite numbers, low < high, got {low}, {high}"
                )
            if name in self.log_scale and low <= 0:
                raise ValueError(f"{name} is searched on a log scale; its low bound must be > 0, got {low}")
        if self.plan in ("search", "optimise-spoken-digits"):
            raise ValueError(f"the search cannot optimise the plan {self.plan!r}")
        return self

    @property
    def n_initial(self) -> int:
        return self.initial or max(4, 2 * len(self.over))


class Space:
    """The box searched, mapped to and from the unit cube (log-scaled settings in log)."""

    def __init__(self, config: SearchConfig, device: Device) -> None:
        self.names = config.over
        self.log = set(config.log_scale)
        self.low, self.high = [], []
        for name in self.names:
            low, high = config.bounds.get(name) or self._default(name, device)
            if name in LIMITED:
                limit = getattr(device.limits, LIMITED[name])
                if max(abs(low), abs(high)) > limit * (1 + 1e-12):
                    raise ConfigError(
                        f"the search's bounds of {name} ({low:g} .. {high:g}) exceed the device's "
                        f"safety limit {LIMITED[name]} = {limit:g}; narrow --bounds {name}=LOW:HIGH"
                    )
            self.low.append(math.log(low) if name in self.log else low)
            self.high.append(math.log(high) if name in self.log else high)

    @staticmethod
    def _default(name: str, device: Device) -> tuple[float, float]:
        if name == "bias_A":
            return 0.1 * device.limits.max_bias_A, device.limits.max_bias_A
        if name == "field_T":
            return 0.0, device.limits.max_field_T
        if name == "drive_fraction":
            return 0.05, 1.0
        raise ConfigError(f"give the range searched for {name}: --bounds {name}=LOW:HIGH")

    def values(self, unit: np.ndarray) -> dict[str, float]:
        """Settings at a point of the unit cube."""
        out = {}
        for name, u, low, high in zip(self.names, unit, self.low, self.high):
            v = low + float(u) * (high - low)
            out[name] = math.exp(v) if name in self.log else v
        return out


def _objective(summary: Mapping[str, Any], key: str, plan: str) -> float:
    value: Any = summary
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            scalars = sorted(k for k, v in summary.items() if isinstance(v, (int, float)))
            raise ConfigError(
                f"the {plan} run has no result {key!r}; its scalar results: {', '.join(scalars)}"
            )
        value = value[part]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"the {plan} run's result {key!r} is {value!r}, not a finite number")
    return float(value)


def run(ctx: RunContext, config: SearchConfig) -> dict[str, Any]:
    """The plan body: screen (optional), then the device, one recorded proposal per evaluation."""
    t_start = time.perf_counter()
    space = Space(config, ctx.device)
    sign = -1.0 if config.minimise else 1.0
    xs: list[np.ndarray] = []
    ys: list[float] = []
    tasks: list[int] = []
    history: list[dict[str, Any]] = []

    def evaluate(index: int, task: int, proposal: Any) -> None:
        # a recorded step: on resume the same point comes back from the journal, not the model
        data = ctx.measure("proposals", lambda _device: {"x": proposal()}, key=f"proposal/{index}")
        x = np.asarray(data["x"], dtype=np.float64).reshape(-1)
        values = space.values(x)
        plan = ctx.plan(config.plan, {**config.settings, **values})
        where = "screen" if task == 0 else "device"
        result = ctx.run(plan, config.screen if task == 0 else None, stage=f"{where}-{index}")
        y = _objective(result.summary, config.objective, config.plan)
        xs.append(x)
        ys.append(sign * y)
        tasks.append(task)
        history.append(
            {"task": where, **values, config.objective: y, "run": str(result.path.relative_to(ctx.path))}
        )
        ctx.progress(
            len(history), config.screen_budget * (config.screen is not None) + config.budget, stage=where
        )

    def over_time() -> bool:
        return config.time_budget_s is not None and time.perf_counter() - t_start > config.time_budget_s

    dims, index = len(space.names), 0
    if config.screen is not None:
        design = bayesopt.sobol_points(config.n_initial, dims, ctx.seed)
        for k in range(config.screen_budget):
            if over_time():
                break
            if k < len(design):
                evaluate(index, 0, lambda k=k: design[k])
            else:
                evaluate(
                    index, 0, lambda k=k: bayesopt.propose(np.array(xs), np.array(ys), seed=ctx.seed + k)
                )
            index += 1
    screened = len(xs)
    design = bayesopt.sobol_points(config.n_initial, dims, ctx.seed + 1)
    for k in range(config.budget):
        if over_time():
            break
        if screened and k == 0:  # start where the stand-in predicts the best
            evaluate(index, 1, lambda: np.array(xs)[bayesopt.predicted_best(np.array(xs), np.array(ys))[0]])
        elif screened:
            evaluate(
                index,
                1,
                lambda k=k: bayesopt.propose(
                    np.array(xs), np.array(ys), seed=ctx.seed + k, tasks=np.array(tasks)
                ),
            )
        elif k < len(design):
            evaluate(index, 1, lambda k=k: design[k])
        else:
            evaluate(index, 1, lambda k=k: bayesopt.propose(np.array(xs), np.array(ys), seed=ctx.seed + k))
        index += 1

    on_device = [h for h in history if h["task"] == "device"]
    if not on_device:
        raise ConfigError("the time budget ended before the first device evaluation; raise --time-budget-s")
    observed = max(on_device, key=lambda h: sign * h[config.objective])
    row, mean = bayesopt.predicted_best(
        np.array(xs), np.array(ys), tasks=np.array(tasks) if screened else None
    )
    modelled = history[row]
    summary = {
        "plan": config.plan,
        "objective": config.objective,
        "direction": "minimise" if config.minimise else "maximise",
        "best": {name: observed[name] for name in space.names}
        | {config.objective: observed[config.objective], "run": observed["run"]},
        "best_by_model": {name: modelled[name] for name in space.names}
        | {"predicted": sign * mean, config.objective: modelled[config.objective], "run": modelled["run"]},
        "best_value": observed[config.objective],
        "device_evaluations": len(on_device),
        "screen_evaluations": len(history) - len(on_device),
        "screen": config.screen,
        "bounds": {
            n: [math.exp(lo) if n in space.log else lo, math.exp(hi) if n in space.log else hi]
            for n, lo, hi in zip(space.names, space.low, space.high)
        },
        "history": history,
        "device": ctx.device.address or type(ctx.device).__name__,
        "wall_s": time.perf_counter() - t_start,
    }
    ctx.save("objective", np.array([h[config.objective] for h in history]), unit="1", what=config.objective)
    ctx.save("on_device", np.array([h["task"] == "device" for h in history]))
    ctx.result(**summary)
    return summary


def plot_progress(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The objective of every evaluation in order, and the best so far on the device."""
    values, device = np.asarray(datasets["objective"]), np.asarray(datasets["on_device"], bool)
    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    ax = fig.subplots()
    n = np.arange(1, values.size + 1)
    if (~device).any():
        ax.plot(n[~device], values[~device], "o", ms=4, color="0.6", label="stand-in (screen)")
    ax.plot(n[device], values[device], "o", ms=4, label="device")
    best = np.maximum.accumulate if results["direction"] == "maximise" else np.minimum.accumulate
    ax.plot(n[device], best(values[device]), "-", label="best on the device so far")
    ax.set_xlabel("evaluation")
    ax.set_ylabel(results["objective"])
    ax.set_title(f"Search of {results['plan']} over {', '.join(results['bounds'])}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab optimise PLAN`` prints."""
    names = list(summary["bounds"])
    at = ", ".join(f"{n} = {summary['best'][n]:.4g}" for n in names)
    model = ", ".join(f"{n} = {summary['best_by_model'][n]:.4g}" for n in names)
    screened = (
        f" after {summary['screen_evaluations']} on {summary['screen']}"
        if summary["screen_evaluations"]
        else ""
    )
    return "\n".join(
        [
            f"best {summary['objective']} on {summary['device']}: {summary['best_value']:.4g} at {at}",
            f"best by the model (noise averaged): {model}, "
            f"predicted {summary['best_by_model']['predicted']:.4g}",
            f"{summary['device_evaluations']} device evaluations{screened}, {summary['wall_s']:.0f} s; "
            f"run: {summary['run_dir']} (search.png; each evaluation in stages/)",
        ]
    )


def _bounds(settings: dict[str, Any], items: list[str]) -> None:
    for item in items:
        name, sep, span = item.partition("=")
        low, colon, high = span.partition(":")
        try:
            if not (sep and colon and name.strip()):
                raise ValueError
            settings.setdefault("bounds", {})[name.strip()] = (float(low), float(high))
        except ValueError:
            raise ConfigError(
                f"--bounds must look like NAME=LOW:HIGH (e.g. bias_A=4e-3:9e-3), got {item!r}"
            ) from None


def _fixed(settings: dict[str, Any], items: list[str]) -> None:
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--with must look like NAME=VALUE (e.g. n_points=1000), got {item!r}")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        settings.setdefault("settings", {})[name.strip()] = value


@command(
    config=SearchConfig,
    report=report,
    shortcuts=(
        Shortcut(("--bounds",), "Range of a searched setting: NAME=LOW:HIGH (repeatable).", _bounds, list),
        Shortcut(
            ("--with",), "A fixed setting of every evaluated run: NAME=VALUE (repeatable).", _fixed, list
        ),
    ),
    help="Bayesian search of a plan's result over its operating point (each evaluation a run).",
)
def plan(config: SearchConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The search as a plan (``spinlab optimise PLAN``)."""
    cfg = make_config(SearchConfig, config, overrides)
    return Plan("search", cfg, lambda ctx: run(ctx, cfg), plots={"search.png": plot_progress})


__all__ = ["SearchConfig", "Space", "plan", "run"]
