"""Plans run in a worker thread, steered from the test thread (control, monitoring tests)."""
from __future__ import annotations

import threading
import time

import numpy as np

from spinlab import Waveform
from spinlab.engine import Plan, RunEngine


def looping_plan(max_steps, on_step=None, pause_s=0.002):
    """``max_steps`` recorded steps of one 200-sample drive at 7.5 mA (dataset ``responses``)."""
    drive = Waveform(np.random.default_rng(0).uniform(-0.3, 0.3, 200), 100e-9)

    def body(ctx):
        for i in range(max_steps):
            ctx.measure("responses", lambda dev: {
                "responses": dev.respond(drive, {"bias_A": 7.5e-3}).samples[None, :]})
            ctx.progress(i + 1, max_steps)
            if on_step is not None:
                on_step(ctx, i + 1)
            time.sleep(pause_s)
        return {"steps": max_steps}

    return Plan("acquire", {"steps": max_steps}, body)


class BackgroundRun:
    """``RunEngine.run`` of a looping plan in a worker thread. ``control``: a ControlServer (or
    None); ``subscribers`` as for the engine. ``wait_steps(n)`` blocks until n steps are done."""

    def __init__(self, tmp_path, device, *, control=None, subscribers=(), max_steps=100_000,
                 on_step=None):
        self.device = device
        self.steps_done = 0
        self.error = None
        self.result = None
        self.state = None
        self.server = control
        self.ready = threading.Event()

        def step(ctx, n):
            self.steps_done = n
            if on_step is not None:
                on_step(ctx, n)

        def control_factory(state):
            self.state = state
            self.server.run = state
            return self.server

        self._plan = looping_plan(max_steps, step)
        self._args = (tmp_path, control_factory if control is not None else None, list(subscribers))
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self):
        root, control, subscribers = self._args

        def started(name, doc):
            if name == "start":
                self.path = doc["path"]
                self.ready.set()

        try:
            self.result = RunEngine(root).run(self._plan, self.device, control=control,
                                              subscribers=[started, *subscribers])
        except BaseException as exc:  # the test inspects how the run ended
            self.error = exc
        finally:
            self.ready.set()

    @property
    def endpoint(self):
        return self.server.endpoint

    def wait_steps(self, n, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while self.steps_done < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.steps_done >= n
