"""Test doubles for plans, subscribers and plug-ins: a device whose answer is known, small plans,
a subscriber that records what it receives, and a run in a background thread.

In the spirit of Bluesky's simulated hardware and PyMeasure's ``expected_protocol``: a plug-in
author tests a plan or a subscriber through the real engine, with no instrument and no mocks::

    from spinlab.engine import RunEngine
    from spinlab.testing import DocumentRecorder, Doubler, steps_plan

    recorder, device = DocumentRecorder(), Doubler()
    result = RunEngine(tmp_path).run(steps_plan(3), device, subscribers=[recorder])
    assert recorder.counts["event"] == 3 and device.calls == 3

``RunEngine(root, plans=plan_lookup(demo=steps_plan), open_device=...)`` lets ``resume`` and
stages find plans and devices that are not installed as entry points.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spinlab.device import Device, SafetyLimits
from spinlab.engine import Plan, RunEngine
from spinlab.engine.engine import ControlFactory, PlanLookup, RunContext, RunResult, RunState, Subscriber
from spinlab.errors import ConfigError
from spinlab.waveform import Waveform


class Doubler(Device):
    """A deterministic device: the response is twice the drive plus the bias current (``bias_A``,
    1 mA by default). Counts ``calls`` (responses) and ``outputs_off_calls``."""

    def __init__(self) -> None:
        super().__init__(SafetyLimits(), {"bias_A": 1e-3})
        self.calls = 0
        self.outputs_off_calls = 0

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: Mapping[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        return np.asarray(2 * drive + conditions["bias_A"][:, None])

    def outputs_off(self) -> None:
        self.outputs_off_calls += 1


class DelayLine(Device):
    """A linear echo-state device with a known memory: the response is the sum of the drive
    delayed by ``0, d, 2 d, ... (taps - 1) d`` samples (``d = delay_samples``). Driven by the
    masked time-multiplexed encoding with ``d`` one node short of a frame
    (``(n_nodes - 1) * samples_per_node``), each node sees the inputs of the last ``taps``
    points through a different mix of the mask: a shift register of length ``taps``, whose
    linear memory capacity is ``taps`` and whose nonlinear capacities are 0."""

    def __init__(self, taps: int, delay_samples: int) -> None:
        super().__init__(SafetyLimits(), {"bias_A": 1e-3})
        self.taps, self.delay_samples = int(taps), int(delay_samples)

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.zeros_like(drive, dtype=np.float64)
        for k in range(self.taps):
            shift = k * self.delay_samples
            if shift < drive.shape[-1]:
                out[..., shift:] += drive[..., : drive.shape[-1] - shift]
        return out


def steps_plan(
    n: int = 5, fail_at: int | None = None, exc: BaseException | None = None, name: str = "demo"
) -> Plan:
    """``n`` device steps of an 8-sample random drive (stream ``steps``: ``drive_V``,
    ``response_V``), a saved waveform ``final`` and the result ``total``; raises ``exc`` before
    step ``fail_at`` (to test how a run ends and resumes)."""

    def body(ctx: RunContext) -> dict[str, Any]:
        total = 0.0
        for i in range(n):
            if i == fail_at and exc is not None:
                raise exc
            drive = Waveform(ctx.rng(f"drive/{i}").uniform(-0.1, 0.1, 8), 1e-9)

            def step(dev: Device, w: Waveform = drive) -> dict[str, np.ndarray]:
                return {"drive_V": w.samples[None], "response_V": dev.respond(w).samples[None]}

            data = ctx.measure("steps", step, key=f"step/{i}", attrs={"drive_V": {"dt_s": 1e-9}})
            total += float(data["response_V"].sum())
            ctx.progress(i + 1, n, stage="steps")
        ctx.save("final", Waveform(np.arange(4.0), 1e-9), note="x")
        ctx.result(total=total)
        return {"total": total}

    return Plan(name, {"n": n}, body, nexus={"signal": "response_V"})


def looping_plan(
    max_steps: int, on_step: Callable[[RunContext, int], None] | None = None, pause_s: float = 0.002
) -> Plan:
    """``max_steps`` recorded steps of one 200-sample drive at 7.5 mA (dataset ``responses``),
    ``pause_s`` apart; ``on_step(ctx, n)`` after step ``n`` (to steer a run from a test)."""
    drive = Waveform(np.random.default_rng(0).uniform(-0.3, 0.3, 200), 100e-9)

    def body(ctx: RunContext) -> dict[str, Any]:
        for i in range(max_steps):
            ctx.measure(
                "responses",
                lambda dev: {"responses": dev.respond(drive, {"bias_A": 7.5e-3}).samples[None, :]},
            )
            ctx.progress(i + 1, max_steps)
            if on_step is not None:
                on_step(ctx, i + 1)
            time.sleep(pause_s)
        return {"steps": max_steps}

    return Plan("acquire", {"steps": max_steps}, body)


def plan_lookup(**factories: Callable[..., Plan]) -> PlanLookup:
    """``RunEngine(plans=plan_lookup(demo=steps_plan))``: plan factories by name, called as the
    engine calls an installed plan's (``factory(config, **overrides)``, config keys as keywords)."""

    def lookup(name: str) -> Callable[..., Plan]:
        if name not in factories:
            raise ConfigError(f"no plan named {name!r}; known plans: {', '.join(sorted(factories))}")
        factory = factories[name]
        return lambda config=None, **overrides: factory(**{**dict(config or {}), **overrides})

    return lookup


class DocumentRecorder:
    """A subscriber that keeps every ``(name, doc)`` it receives and counts them by name."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, Mapping[str, Any]]] = []
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        self.docs.append((name, doc))
        self.counts[name] += 1

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.docs]

    def of(self, name: str) -> list[Mapping[str, Any]]:
        """The documents called ``name``, in order."""
        return [doc for n, doc in self.docs if n == name]


class BackgroundRun:
    """``RunEngine.run`` of :func:`looping_plan` in a worker thread, steered from the test thread.
    ``control``: a control server (its ``run`` is set to the run's state) or None;
    ``wait_steps(n)`` blocks until n steps are done; ``result`` or ``error`` tell how it ended."""

    def __init__(
        self,
        root: str | Path,
        device: str | Device,
        *,
        control: Any = None,
        subscribers: Iterable[Subscriber] = (),
        max_steps: int = 100_000,
        on_step: Callable[[RunContext, int], None] | None = None,
    ) -> None:
        self.device = device
        self.steps_done = 0
        self.error: BaseException | None = None
        self.result: RunResult | None = None
        self.state: RunState | None = None
        self.path: str | None = None
        self.server = control
        self.ready = threading.Event()

        def step(ctx: RunContext, n: int) -> None:
            self.steps_done = n
            if on_step is not None:
                on_step(ctx, n)

        def control_factory(state: RunState) -> Any:
            self.state = state
            self.server.run = state
            return self.server

        self._plan = looping_plan(max_steps, step)
        self._root = Path(root)
        self._control: ControlFactory | None = control_factory if control is not None else None
        self._subscribers = list(subscribers)
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        def started(name: str, doc: Mapping[str, Any]) -> None:
            if name == "start":
                self.path = doc["path"]
                self.ready.set()

        try:
            self.result = RunEngine(self._root).run(
                self._plan, self.device, control=self._control, subscribers=[started, *self._subscribers]
            )
        except BaseException as exc:  # the test inspects how the run ended
            self.error = exc
        finally:
            self.ready.set()

    @property
    def endpoint(self) -> Any:
        return self.server.endpoint

    def wait_steps(self, n: int, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.steps_done < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.steps_done >= n


__all__ = [
    "DelayLine",
    "Doubler",
    "steps_plan",
    "looping_plan",
    "plan_lookup",
    "DocumentRecorder",
    "BackgroundRun",
]
