"""Shared by the web monitor tests: a bridge on its own event loop, and runs in a thread."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from spinlab import Waveform
from spinlab.monitoring.web import WebMonitor
from spinlab.run import Run


class BridgeThread:
    """A WebMonitor serving from a background event loop, as `spinlab monitor --web` does."""

    def __init__(self, address: str, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.bridge = WebMonitor(address, **options)
        self.url = self.call(self.bridge.start())

    def call(self, coroutine, timeout_s: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stats(self) -> dict:
        return self.call(_now(self.bridge.stats))

    def close(self) -> None:
        self.call(self.bridge.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _now(fn):
    return fn()


class RunThread:
    """A protocol-like loop over a Run in a worker thread: respond, record, publish a preview
    and progress, checkpoint; ``hold`` paces it so a test can watch it mid-run."""

    def __init__(self, tmp_path, device, *, steps: int = 100_000, monitor: str = "tcp://127.0.0.1:0",
                 control: str | None = None, control_keys=None, step_s: float = 0.01) -> None:
        self.device, self.steps, self.step_s = device, steps, step_s
        self.steps_done = 0
        self.bias_seen_on = False
        self.error: BaseException | None = None
        self.run: Run | None = None
        self.ready = threading.Event()
        self._args = (tmp_path, monitor, control, control_keys)
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()
        assert self.ready.wait(15), "the run did not start"

    def _work(self) -> None:
        tmp_path, monitor, control, keys = self._args
        drive = Waveform(np.random.default_rng(0).uniform(-0.3, 0.3, 400), 100e-9)
        try:
            with self.device as dev, Run("acquire", {"steps": self.steps, "device": "test"},
                                         root=tmp_path, device=dev, monitor=monitor,
                                         control=control, control_keys=keys) as run:
                self.run = run
                self.ready.set()
                for i in range(self.steps):
                    response = dev.respond(drive, {"bias_A": 7.5e-3})
                    lab = getattr(dev, "lab", None)
                    self.bias_seen_on |= bool(lab is not None and lab.source.output_on)
                    run.append("responses", response.samples[None, :])
                    run.preview("response", response)
                    run.progress(i + 1, self.steps)
                    self.steps_done = i + 1
                    run.checkpoint()
                    time.sleep(self.step_s)
        except BaseException as exc:  # the test inspects how the run ended
            self.error = exc
            self.ready.set()

    def wait_steps(self, n: int, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.steps_done < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.steps_done >= n

    def join(self, timeout_s: float = 10.0) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not end"


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.02):
    """Poll until ``predicate()`` is truthy; returns its value (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return None
