"""``spinlab monitor ADDRESS --web [HOST:]PORT``: a web page bridged to a run's event stream.

One :class:`~spinlab.monitoring.Subscriber` (a thread) feeds a :class:`~.relay.Relay`; an
aiohttp server serves a static page and one WebSocket per browser. Routes:

    GET  /                      the page (static files, no build step; uPlot is vendored)
    GET  /static/...            its files
    GET  /ws                    the live stream (frames below)
    GET  /api/state             the same state as one JSON object, and per-page queues (scripts, curl)
    POST /api/control/COMMAND   status | pause | resume | abort; only with ``--web-control``,
                                with ``Authorization: Bearer TOKEN``
    GET  /runs                  the lab notebook: the catalog's runs (``--runs-dir``), a run's
                                summary and figures, comparisons; its JSON under /api/runs and
                                /api/compare (see :mod:`.runs`), read-only

Frames to the page (JSON text): first ``{"type": "snapshot", "control": bool, "messages":
[...], "stats": {...}}``, then ``{"type": "batch", "messages": [...], "stats": {...}}`` at most
every ``flush_interval_s`` while something is pending. ``messages`` are the ``--json`` line
format (``progress`` also carries ``eta_s``); ``stats.client.lost`` is how many messages this
page will never get because it read too slowly. The page may send only ``{"type": "ping"}``
(answered ``{"type": "pong"}``).

Why it cannot slow the run: the publisher never waits for any subscriber, this one included;
the relay never waits for a browser (bounded per-browser queues, see :mod:`.relay`).
Why it survives hostile clients: frames over ``max_frame_bytes``, binary, non-JSON or unknown
frames are refused and counted (a client sending more than a few is disconnected); more than
``max_clients`` WebSockets are refused with 503; wrong ``Host`` (DNS rebinding) or a foreign
``Origin`` get 403; idle connections are closed after ``keepalive_timeout``; a browser that
stops answering pings is dropped after ``heartbeat_s``.

Control: only with a :class:`~spinlab.monitoring.ControlClient` (its CURVE keys are the
server's, never the browser's). The page must present the random token printed at start-up;
it is compared in constant time (:func:`hmac.compare_digest`). No token: 401; wrong: 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from spinlab.errors import ConfigError
from spinlab.monitoring.addresses import is_loopback
from spinlab.monitoring.control import COMMANDS, ControlClient, ControlError
from spinlab.monitoring.subscriber import Subscriber
from spinlab.monitoring.web.relay import ClientQueue, Entry, Relay
from spinlab.monitoring.web.runs import CatalogViews, UnknownRun

log = logging.getLogger("spinlab.monitoring.web")

STATIC = Path(str(resources.files("spinlab.monitoring.web") / "static"))
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ADDRESS_RE = re.compile(r"^(?:(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):)?(?P<port>\d+)$")
_MAX_BAD_FRAMES = 8
#: Kernel send buffer of each page's socket: plenty for 5 updates a second over a slow link,
#: and what bounds the memory a page that stopped reading holds in the kernel.
SEND_BUFFER_BYTES = 256 * 1024


def parse_web_address(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); no host (or an empty one) means 127.0.0.1; port 0 picks
    a free one. Other interfaces work and are warned about (the page is not encrypted)."""
    m = _ADDRESS_RE.match((value or "").strip())
    if not m or not 0 <= int(m["port"]) < 65536:
        raise ConfigError(
            f"--web {value!r} must be [HOST:]PORT, e.g. 8080 or 127.0.0.1:8080 (port 0 picks a free one)"
        )
    host = (m["host"] or "127.0.0.1").strip("[]")
    if not is_loopback(host):
        log.warning(
            "the web monitor binds to %s: reachable from other machines, unencrypted; "
            "use 127.0.0.1:PORT (and an SSH tunnel) unless you mean it",
            host,
        )
    return host, int(m["port"])


class _Browser:
    """One connected page: its WebSocket, its queue and the event that wakes its sender."""

    def __init__(self, ws: web.WebSocketResponse, queue: ClientQueue, transport) -> None:
        self.ws, self.queue, self.transport = ws, queue, transport
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.bad_frames = 0


class WebMonitor:
    """Serve the web view of the run publishing on ``address`` (see module docstring).

    ``control``: a ControlClient to enable pause/resume/abort (``token`` is then set).
    ``on_accept``: called with the raw frames of every accepted message (``--record``).
    ``runs_dir``: serve that runs folder's catalog at ``/runs`` (read-only).
    """

    def __init__(
        self,
        address: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        topics: Sequence[str] = ("",),
        control: ControlClient | None = None,
        flush_interval_s: float = 0.2,
        max_clients: int = 32,
        max_frame_bytes: int = 4096,
        heartbeat_s: float = 20.0,
        keepalive_timeout_s: float = 10.0,
        on_accept: Callable[[list], None] | None = None,
        runs_dir: str | Path | None = None,
    ) -> None:
        self.host, self.port = host, int(port)
        self.runs = CatalogViews(runs_dir) if runs_dir is not None else None
        self.control = control
        self.token = secrets.token_urlsafe(32) if control is not None else None
        self.flush_interval_s = float(flush_interval_s)
        self.max_clients = int(max_clients)
        self.max_frame_bytes = int(max_frame_bytes)
        self.heartbeat_s = float(heartbeat_s)
        self.keepalive_timeout_s = float(keepalive_timeout_s)
        self.relay = Relay()
        self.subscriber = Subscriber(address, topics=topics)
        self.subscriber.on_accept = on_accept
        self.counts = {
            "connections": 0,
            "refused_connections": 0,
            "bad_host": 0,
            "bad_origin": 0,
            "rejected_frames": 0,
            "control_requests": 0,
            "control_unauthorised": 0,
            "control_forbidden": 0,
        }
        self.url: str | None = None
        self._browsers: set[_Browser] = set()
        self._control_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stop = threading.Event()
        self._wake_pending = False
        self._pump_thread: threading.Thread | None = None
        self._hosts: set[str] = set()
        self._warned: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> str:
        """Bind, start reading the stream; returns the page's URL."""
        self._loop = asyncio.get_running_loop()
        self._control_lock = asyncio.Lock()
        app = web.Application(middlewares=[self._guard], client_max_size=self.max_frame_bytes)
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/control/{command}", self._control)
        app.router.add_get("/runs", self._runs_page)
        app.router.add_get("/api/runs", self._runs_api)
        app.router.add_get("/api/runs/{run_id}", self._runs_api)
        app.router.add_get("/api/runs/{run_id}/figures/{name}", self._figure)
        app.router.add_get("/api/compare", self._runs_api)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=self.keepalive_timeout_s,
        )
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, backlog=128).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"cannot serve the web monitor on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; pick another port (0 picks a free one)"
            ) from None
        self.port = self._runner.addresses[0][1]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}/"
        if is_loopback(self.host):  # DNS rebinding: a page of another site must not reach us
            self._hosts = {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]", shown)}
        self._pump_thread = threading.Thread(target=self._pump, name="spinlab-web-pump", daemon=True)
        self._pump_thread.start()
        return self.url

    async def close(self) -> None:
        self._stop.set()
        if self._pump_thread is not None:
            await asyncio.to_thread(self._pump_thread.join, 2.0)
        for browser in list(self._browsers):  # "going away": the pages reconnect by themselves
            try:
                await asyncio.wait_for(browser.ws.close(code=1001, message=b"server shutting down"), 1.0)
            except Exception:  # e.g. a page that stopped reading: it must not hold us up
                if browser.transport is not None:
                    browser.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        self.subscriber.close()

    def run(self, ready: Callable[[str], None] = lambda url: None) -> None:
        """Serve until Ctrl-C or SIGTERM (the ``spinlab monitor --web`` loop)."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            # no asyncio signal handlers on Windows or off the main thread: Ctrl-C still stops it
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, stop.set)
            try:
                await self.start()
                ready(self.url)
                await stop.wait()
            finally:
                await self.close()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    def stats(self, queue: ClientQueue | None = None) -> dict[str, Any]:
        sub = self.subscriber
        out = {
            "stream": {
                "received": sub.received,
                "missed": sub.missed,
                "rejected": sub.rejected,
                "resyncs": sub.resyncs,
                "duplicates": sub.duplicates,
            },
            "web": {**self.counts, "clients": len(self._browsers), **self.relay.counts},
        }
        if queue is not None:
            out["client"] = {"sent": queue.sent, "lost": queue.lost}
        return out

    def pages(self) -> list[dict[str, int]]:
        """Per connected page: messages sent, lost (skipped) and pending now."""
        return [
            {"sent": b.queue.sent, "lost": b.queue.lost, "pending": self.relay.pending(b.queue)}
            for b in self._browsers
        ]

    # --- the stream (reader thread) --------------------------------------------------------
    def _pump(self) -> None:
        sub = self.subscriber
        while not self._stop.is_set():
            try:
                first = sub.recv(0.2)
                if first is None:
                    continue
                self.relay.ingest([first, *sub.drain(1000)])
            except Exception:  # a bug or a message we did not foresee must not end the view
                log.exception("web monitor: could not process monitoring messages")
                continue
            if not self._wake_pending:
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._wake_browsers)

    def _wake_browsers(self) -> None:
        self._wake_pending = False
        for browser in self._browsers:
            browser.wake.set()

    # --- HTTP ------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self._hosts and request.host not in self._hosts:
            self.counts["bad_host"] += 1
            return _error(403, f"unexpected Host {request.host!r}: open {self.url}")
        return await handler(request)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """Log a refusal at most every 10 s per kind: a flood is counted, not echoed line by line."""
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= 10.0:
            self._warned[kind] = now
            log.warning(message + " (further ones counted in /api/state for 10 s)", *args)

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or origin == f"{request.scheme}://{request.host}":
            return True
        self.counts["bad_origin"] += 1
        self._warn("origin", "web monitor refused a request from origin %r", origin[:100])
        return False

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    # --- the catalog (read-only) -------------------------------------------------------------
    async def _runs_page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "runs.html")

    async def _catalog(self, call: Callable[[], Any]) -> Any:
        """``call()`` in a thread (the catalog's queries block); errors as one-line JSON."""
        if self.runs is None:
            return _error(404, "this server shows no catalog: start it with --runs-dir FOLDER")
        try:
            return await asyncio.to_thread(call)
        except UnknownRun as exc:
            return _error(404, str(exc))
        except ConfigError as exc:
            return _error(400, str(exc))
        except Exception:
            log.exception("web monitor: the catalog could not answer")
            return _error(500, "the catalog could not answer (see the server's log)")

    async def _runs_api(self, request: web.Request) -> web.Response:
        runs = self.runs
        query = {k: request.query.getall(k) for k in request.query}
        run_id = request.match_info.get("run_id")
        if request.path == "/api/compare":
            found = await self._catalog(lambda: runs.compare(query.get("run", [])))
        elif run_id is not None:
            found = await self._catalog(lambda: runs.run(run_id))
        else:
            found = await self._catalog(lambda: runs.runs(query))
        return found if isinstance(found, web.StreamResponse) else web.json_response(found)

    async def _figure(self, request: web.Request) -> web.StreamResponse:
        runs = self.runs
        run_id, name = request.match_info["run_id"], request.match_info["name"]
        found = await self._catalog(lambda: runs.figure(run_id, name))
        return found if isinstance(found, web.StreamResponse) else web.FileResponse(found)

    async def _state(self, request: web.Request) -> web.Response:
        body = (
            f'{{"run":{json.dumps(self.relay.run_id)},"control":{json.dumps(self.token is not None)},'
            f'"messages":{self.relay.encode(self.relay.snapshot())},"stats":{json.dumps(self.stats())},'
            f'"pages":{json.dumps(self.pages())}}}'
        )
        return web.Response(text=body, content_type="application/json")

    async def _control(self, request: web.Request) -> web.Response:
        self.counts["control_requests"] += 1
        if self.token is None:
            self.counts["control_forbidden"] += 1
            return _error(
                403,
                "this web monitor is read-only; start it with --web-control "
                "(and --control, --key, --server-key) to allow control",
            )
        if not self._same_origin(request):
            self.counts["control_forbidden"] += 1
            return _error(403, "cross-origin control requests are refused")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            self.counts["control_unauthorised"] += 1
            return _error(
                401,
                "control needs the token printed when the web monitor started (Authorization: Bearer TOKEN)",
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            self.counts["control_forbidden"] += 1
            self._warn("token", "web monitor: wrong control token from %s", request.remote)
            return _error(403, "wrong control token")
        command = request.match_info["command"]
        if command not in COMMANDS:
            return _error(400, f"unknown command {command[:40]!r}; use one of {', '.join(COMMANDS)}")
        async with self._control_lock:
            try:
                reply = await asyncio.to_thread(self.control.request, command)
            except ControlError as exc:
                return _error(502, str(exc))
        if command != "status":
            log.warning("web monitor: %s sent for %s", command, request.remote)
        return web.json_response(
            {"ok": True, "command": command, "state": reply.get("state"), "status": reply.get("status")}
        )

    # --- WebSockets ------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return _error(403, "cross-origin WebSockets are refused")
        if len(self._browsers) >= self.max_clients:
            self.counts["refused_connections"] += 1
            self._warn(
                "clients", "web monitor: refused a connection (already %d pages open)", self.max_clients
            )
            return _error(503, f"too many pages open (max {self.max_clients}); close one and retry")
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:  # a fixed kernel buffer per page (autotuning grows it to MBs)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        ws = web.WebSocketResponse(
            max_msg_size=self.max_frame_bytes, heartbeat=self.heartbeat_s, compress=False
        )
        await ws.prepare(request)
        queue, snapshot = self.relay.attach()
        browser = _Browser(ws, queue, transport)
        self._browsers.add(browser)
        self.counts["connections"] += 1
        sender = asyncio.create_task(self._send_loop(browser, snapshot))
        try:
            async for frame in ws:
                if frame.type is WSMsgType.ERROR:  # e.g. a frame over max_frame_bytes, bad framing
                    self._refuse(browser, f"bad frame: {ws.exception()}")
                    break
                await self._on_frame(browser, frame)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self._browsers.discard(browser)
            self.relay.detach(queue)
        return ws

    async def _on_frame(self, browser: _Browser, frame) -> None:
        kind = None
        if frame.type is WSMsgType.TEXT:
            try:
                data = json.loads(frame.data)
            except ValueError:
                data = None
            kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            await self._send(browser, '{"type":"pong"}')
            return
        what = (
            "binary frames"
            if frame.type is WSMsgType.BINARY
            else f"message type {str(kind)[:40]!r}"
            if kind is not None
            else "a frame that is not a JSON map"
        )
        self._refuse(browser, f"unknown {what}")
        if browser.bad_frames > _MAX_BAD_FRAMES:
            await browser.ws.close(code=1008, message=b"too many bad frames")
        else:
            await self._send(browser, json.dumps({"type": "error", "error": f"refused {what}"}))

    def _refuse(self, browser: _Browser, why: str) -> None:
        browser.bad_frames += 1
        self.counts["rejected_frames"] += 1
        self._warn("frame", "web monitor: refused a frame from a page: %s", why)

    async def _send_loop(self, browser: _Browser, snapshot: list[Entry]) -> None:
        await self._send(
            browser, self._frame("snapshot", snapshot, browser.queue, control=self.token is not None)
        )
        while not browser.ws.closed:
            await browser.wake.wait()
            browser.wake.clear()
            entries = self.relay.take(browser.queue)
            if entries:
                await self._send(browser, self._frame("batch", entries, browser.queue))
            await asyncio.sleep(self.flush_interval_s)  # meanwhile the queue coalesces

    def _frame(self, kind: str, entries: list[Entry], queue: ClientQueue, **extra: Any) -> str:
        head = json.dumps({"type": kind, **extra})[:-1]
        return f'{head},"messages":{self.relay.encode(entries)},"stats":{json.dumps(self.stats(queue))}}}'

    async def _send(self, browser: _Browser, text: str) -> None:
        async with browser.send_lock:  # a stalled page blocks only its own sender here
            with contextlib.suppress(ConnectionError, RuntimeError):
                await browser.ws.send_str(text)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status, headers=headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)
