"""Shared by the web monitor tests: a bridge on its own event loop, a run steered from the test,
a page that can really stall, the control keys."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import pytest

from spinlab.engine import Plan, RunEngine
from spinlab.monitoring import ControlServer, create_keys
from spinlab.monitoring.documents import MonitorPublisher
from spinlab.monitoring.web import WebMonitor
from spinlab.testing import BackgroundRun


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
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
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


class SteeredRun:
    """A run through the engine whose plan does what the test hands it, in the run thread:
    ``run.do(lambda ctx: ctx.progress(3, 10))``; ``finish()`` lets the plan end (``completed``).
    ``endpoint`` is its monitor address (``--monitor``)."""

    def __init__(self, tmp_path, kind: str = "acquire", config=None) -> None:
        self.publisher = MonitorPublisher("tcp://127.0.0.1:0")
        self.endpoint = self.publisher.endpoint
        self._jobs: queue.Queue = queue.Queue()

        def body(ctx):
            while (job := self._jobs.get()) is not None:
                fn, reply = job
                try:
                    reply.put((fn(ctx), None))
                except BaseException as exc:  # handed back to the test thread
                    reply.put((None, exc))
            return {}

        plan = Plan(kind, config or {}, body, needs_device=False)
        self.thread = threading.Thread(
            target=RunEngine(tmp_path / "runs").run,
            args=(plan,),
            kwargs={"subscribers": [self.publisher]},
            daemon=True,
        )
        self.thread.start()

    def do(self, fn, timeout_s: float = 60.0):
        reply: queue.Queue = queue.Queue()
        self._jobs.put((fn, reply))
        value, error = reply.get(timeout=timeout_s)
        if error is not None:
            raise error
        return value

    def sent(self) -> int:
        return self.publisher.publisher.stats()["sent"]

    def finish(self) -> None:
        if self.thread.is_alive():
            self._jobs.put(None)
            self.thread.join(10)
            self.publisher.close()


def controlled_run(tmp_path, device, keys) -> BackgroundRun:
    """A looping acquisition (spinlab.testing.BackgroundRun) serving the control channel and the
    monitor stream (``run.monitor``); ``run.bias_seen_on`` tells whether the source was on."""
    publisher = MonitorPublisher("tcp://127.0.0.1:0")

    def watch_bias(ctx, n):
        lab = getattr(ctx.device, "lab", None)
        run.bias_seen_on = run.bias_seen_on or bool(lab is not None and lab.source.output_on)

    run = BackgroundRun(
        tmp_path,
        device,
        control=ControlServer("tcp://127.0.0.1:0", keys_dir=keys["dir"]),
        subscribers=[publisher],
        on_step=watch_bias,
    )
    run.bias_seen_on, run.publisher, run.monitor = False, publisher, publisher.endpoint
    assert run.ready.wait(15), "the run did not start"
    return run


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.02):
    """Poll until ``predicate()`` is truthy; returns its value (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return None
