"""The operating-point search: finds a known optimum, screens on a stand-in, resumes, refuses
bounds beyond the device's limits, and `spinlab optimise PLAN` is generated for every plan."""

from __future__ import annotations

import signal
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.engine import Plan, RunContext, RunEngine
from spinlab.errors import ConfigError, RunInterrupted
from spinlab.protocols import search
from spinlab.testing import Doubler, plan_lookup
from spinlab.waveform import Waveform

OPTIMUM_A = 6.2e-3
#: evaluations of the peak plan that raise RunInterrupted (to stop a search part-way)
INTERRUPT_AT: set[int] = set()
CALLS: list[float] = []


def response_peak(bias_A: float, offset_A: float = 0.0) -> float:
    """A smooth peak of height 1 at OPTIMUM_A (+ offset), 1 mA wide."""
    return float(np.exp(-(((bias_A - OPTIMUM_A - offset_A) / 1e-3) ** 2)))


def peak_plan(**config: Any) -> Plan:
    """A run whose result ``score`` peaks at a known bias (measured through the device's
    response to its bias, plus seeded noise of 1 %); ``offset_A`` shifts the peak (a stand-in
    that is slightly wrong)."""
    cfg = {"bias_A": 5e-3, "offset_A": 0.0, **config}

    def body(ctx: RunContext) -> dict[str, Any]:
        CALLS.append(cfg["bias_A"])
        if len(CALLS) in INTERRUPT_AT:
            raise RunInterrupted(signal.SIGINT, "stopped by the test")
        drive = Waveform(np.zeros(4), 1e-9)
        data = ctx.measure(
            "bias", lambda dev: {"response_V": dev.respond(drive, {"bias_A": cfg["bias_A"]}).samples[None]}
        )
        measured = float(data["response_V"].mean())  # the Doubler answers its bias
        score = response_peak(measured, cfg["offset_A"]) + ctx.rng("noise").normal(0, 0.01)
        ctx.result(score=score)
        return {"score": score}

    return Plan("peak", cfg, body)


def engine(root) -> RunEngine:
    return RunEngine(root, plans=plan_lookup(search=search.plan, peak=peak_plan))


def config(**changes: Any) -> dict[str, Any]:
    return {
        "plan": "peak",
        "over": ("bias_A",),
        "bounds": {"bias_A": (2e-3, 10e-3)},
        "objective": "score",
        "budget": 8,
        "initial": 3,
        **changes,
    }


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.clear()
    INTERRUPT_AT.clear()


def test_the_search_finds_a_known_optimum_within_its_budget(tmp_path):
    result = engine(tmp_path).run(search.plan(config()), Doubler())
    best = result.summary["best"]
    assert best["bias_A"] == pytest.approx(OPTIMUM_A, rel=0.05)
    assert result.summary["device_evaluations"] == 8
    stages = sorted(p.name for p in (result.path / "stages").iterdir())
    assert len(stages) == 8 and all((result.path / "stages" / s / "run.h5").is_file() for s in stages)
    assert (result.path / "search.png").is_file()


def test_screening_on_a_good_stand_in_starts_the_device_near_the_optimum(tmp_path):
    """The stand-in's peak is 0.2 mA off: the device's first evaluation (the stand-in's
    predicted best) is already within 0.4 mA, and 4 device evaluations find the optimum."""
    cfg = config(budget=4, screen="stand-in", screen_budget=6)
    opener = lambda address, **_: Doubler()  # noqa: E731 - the stand-in is another Doubler
    runs = RunEngine(tmp_path, plans=plan_lookup(search=search.plan, peak=peak_plan), open_device=opener)
    result = runs.run(search.plan(cfg), Doubler())
    history = result.summary["history"]
    on_device = [h for h in history if h["task"] == "device"]
    assert len(on_device) == 4 and result.summary["screen_evaluations"] == 6
    assert abs(on_device[0]["bias_A"] - OPTIMUM_A) < 0.4e-3
    assert result.summary["best"]["bias_A"] == pytest.approx(OPTIMUM_A, rel=0.05)


def test_a_stopped_search_resumes_with_the_same_points_and_reruns_nothing_completed(tmp_path):
    INTERRUPT_AT.add(6)  # the 6th evaluation is stopped
    runs = engine(tmp_path)
    with pytest.raises(RunInterrupted):
        runs.run(search.plan(config(budget=7)), Doubler())
    first = list(CALLS[:5])
    path = next(p for p in tmp_path.iterdir() if p.is_dir())
    CALLS.clear()
    result = runs.resume(path, Doubler())
    assert result.status == "completed" and result.summary["device_evaluations"] == 7
    assert [h["bias_A"] for h in result.summary["history"][:5]] == pytest.approx(first)
    assert len(CALLS) == 2  # the stopped evaluation and the one after it; the first five were read back


def test_bounds_beyond_the_devices_safety_limit_are_refused_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="max_bias_A"):
        engine(tmp_path).run(search.plan(config(bounds={"bias_A": (2e-3, 20e-3)})), Doubler())
    assert CALLS == []


def test_optimise_is_generated_for_every_plan_and_keeps_the_gradient_method():
    runner = CliRunner()
    searched = runner.invoke(app, ["optimise", "reservoir-measures", "--help"])
    assert searched.exit_code == 0 and "--over" in searched.output and "--bounds" in searched.output
    gradient = runner.invoke(app, ["optimise", "spoken-digits", "--help"])
    assert gradient.exit_code == 0 and "--iterations" in gradient.output and "--over" not in gradient.output
    bad = runner.invoke(app, ["optimise", "reservoir-measures", "--device", "sim:vortex", "--over", "bias_A",
                              "--objective", "memory_capacity", "--bounds", "bias_A=4e-3"])  # fmt: skip
    assert bad.exit_code == 2 and "NAME=LOW:HIGH" in bad.output
