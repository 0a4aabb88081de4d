"""Shared by the web monitor tests: a bridge on its own event loop, and runs in a thread."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from spinlab import Waveform
from spinlab.monitoring import create_keys
from spinlab.monitoring.web import WebMonitor
from spinlab.run import Run


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A control key directory with one authorised client, the web monitor's."""
    root = tmp_path_factory.mktemp("keys")
    return {"dir": root, **create_keys(root, "webmonitor")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class RawPage:
    """A WebSocket page on a plain socket with a tiny receive buffer: when it stops reading, the
    bridge's writes to it really stall (an aiohttp client would keep buffering MBs for it)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the bridge closed the connection"
            data += chunk
        return data

    def read_json(self) -> dict:
        """The next text frame (the bridge sends unfragmented, unmasked frames)."""
        first, size = self._exactly(2)
        assert first == 0x81, f"not a final text frame: {first:#x}"
        size &= 0x7F
        if size >= 126:
            size = struct.unpack(">H" if size == 126 else ">Q", self._exactly(2 if size == 126 else 8))[0]
        return json.loads(self._exactly(size))

    def close(self) -> None:
        self.sock.close()


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
