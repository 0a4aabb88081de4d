"""The web bridge of `spinlab monitor --web`: late joiners, bounded queues, hostile clients and
token-guarded control, over real sockets (ZeroMQ from a Run, HTTP/WebSocket with aiohttp)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import h5py
import msgpack
import numpy as np
import pytest
import zmq
from typer.testing import CliRunner
from web_helpers import BridgeThread, RawPage, SteeredRun, controlled_run, free_port, keys, wait_for  # noqa: F401 (keys: fixture)

import spinlab
from spinlab import RunAborted
from spinlab.cli import app
from spinlab.engine import Plan, RunEngine
from spinlab.errors import ConfigError
from spinlab.monitoring import ControlClient, Publisher, Subscriber, messages
from spinlab.monitoring.documents import MonitorPublisher
from spinlab.monitoring.web import Relay, parse_web_address
from spinlab.monitoring.web.relay import ClientQueue, browser_json
from spinlab.registry import open_device

runner = CliRunner()


def message(topic, payload=None, arrays=None, seq=0, run="r1", t=0.0, replay=False):
    return messages.Message(topic, run, seq, t, payload or {}, arrays or {}, replay)


async def _ws_frames(url, until, *, timeout_s=10.0, headers=None):
    """Connect a WebSocket and collect frames until ``until(frames)`` is true."""
    frames = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url + "ws", headers=headers) as ws:
            deadline = time.monotonic() + timeout_s
            while not until(frames) and time.monotonic() < deadline:
                frames.append(await ws.receive_json(timeout=max(0.01, deadline - time.monotonic())))
    return frames


def _messages(frames):
    return [m for f in frames for m in f.get("messages", [])]


def _http(method, url, **kwargs):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, **kwargs) as response:
                return response.status, await response.json(content_type=None)

    return asyncio.run(go())


# --- the relay on its own ---------------------------------------------------------------------
def test_a_slow_page_gets_only_the_newest_value_per_key_and_is_told_how_many_it_lost():
    relay = Relay(max_series_per_client=5)
    queue, snapshot = relay.attach()
    assert snapshot == []
    for i in range(1000):
        relay.ingest(
            [
                message(
                    "preview", {"name": "resp", "dt_s": 1e-7}, {"samples": np.full(100, i / 1000)}, seq=2 * i
                ),
                message("twin.loss", {"step": i, "loss": 1.0 / (i + 1)}, seq=2 * i + 1),
            ]
        )
    assert len(queue) == 1 + 5  # one waveform (the newest) and the last 5 loss points, nothing more
    entries = relay.take(queue)
    assert [e.msg.topic for e in entries] == ["twin.loss"] * 4 + ["preview", "twin.loss"]
    assert entries[4].msg.arrays["samples"][0] == 0.999
    assert queue.lost == 999 + 995 and queue.sent == 6 and len(queue) == 0
    # a page joining now gets the newest waveform and the loss curve so far (bounded history)
    late, snapshot = relay.attach()
    assert [e.msg.topic for e in snapshot].count("twin.loss") == 1000
    assert sum(e.msg.topic == "preview" for e in snapshot) == 1


def test_a_new_run_on_the_same_address_starts_the_state_afresh_and_eta_follows_the_rate():
    relay = Relay()
    relay.ingest(
        [message("start", {"kind": "a"}, run="r1"), message("twin.loss", {"loss": 1.0}, run="r1", seq=1)]
    )
    relay.ingest(
        [
            message("progress", {"done": 1, "total": 111}, run="r2", t=100.0),
            message("progress", {"done": 3, "total": 111}, run="r2", t=101.0, seq=1),
            message("progress", {"done": 11, "total": 111}, run="r2", t=161.0, seq=2),
            message("progress", {"done": 12, "total": 111}, run="r2", t=171.0, seq=3),
        ]
    )
    snapshot = relay.snapshot()
    assert {e.msg.run_id for e in snapshot} == {"r2"} and len(snapshot) == 1
    assert json.loads(relay.encode(snapshot))[0]["eta_s"] == 990.0  # 99 steps left at the last minute's 0.1/s


def test_browser_json_sends_one_plottable_row_with_its_time_axis():
    batch = np.arange(2 * 50_000, dtype=float).reshape(2, 50_000)
    out = browser_json(message("preview", {"name": "resp", "dt_s": 1e-7, "t0_s": 1e-6}, {"samples": batch}))
    arr = out["arrays"]["samples"]
    assert arr["shape"] == [2000] and len(arr["data"]) == 2000  # first row, min/max-decimated
    assert arr["data"][0] == 0.0 and max(arr["data"]) == 49_999.0
    assert arr["dt_s"] == pytest.approx(50e-7 / 2) and arr["t0_s"] == 1e-6 and arr["x_unit"] == "s"
    odd = browser_json(
        message("acquire.batch", {}, {"z": np.array([3 + 4j, np.nan]), "flag": np.array([True, False])})
    )
    assert odd["arrays"]["z"]["data"] == [5.0, None] and odd["arrays"]["z"]["x_unit"] == "sample"
    assert odd["arrays"]["flag"]["data"] == [1.0, 0.0]


# --- a live bridge ----------------------------------------------------------------------------
@pytest.fixture
def live_run(tmp_path):
    run = SteeredRun(tmp_path, "characterize", {"device": "sim:vortex", "bias_points": 20})
    yield run
    run.finish()


def test_a_late_joining_page_gets_the_run_from_the_cache_then_live_updates(live_run):
    live_run.do(
        lambda ctx: (
            ctx.progress(4, 10, stage="bias sweep"),
            ctx.preview("response", spinlab.Waveform(np.sin(np.linspace(0, 20, 50_000)), 1e-8)),
        )
    )
    assert wait_for(lambda: live_run.sent() >= 3)  # sent before the bridge existed
    bridge = BridgeThread(live_run.endpoint, flush_interval_s=0.05)
    try:
        assert wait_for(lambda: bridge.stats()["stream"]["received"] >= 3)

        async def watch():
            frames = []
            async with aiohttp.ClientSession() as session, session.ws_connect(bridge.url + "ws") as ws:
                frames.append(await ws.receive_json(timeout=5))
                live_run.do(
                    lambda ctx: (ctx.progress(5, 10, stage="bias sweep"), ctx.result(threshold_A=4.98e-3))
                )
                while not any(m["topic"] == "result" for m in _messages(frames)):
                    frames.append(await ws.receive_json(timeout=5))
            return frames

        frames = asyncio.run(watch())
        first = frames[0]
        assert first["type"] == "snapshot" and first["control"] is False
        cached = [m for m in first["messages"] if m["topic"] != "monitor.stats"]
        assert [m["topic"] for m in cached] == ["opening", "start", "progress", "preview"]
        assert all(m["replay"] for m in cached)
        assert cached[1]["payload"]["config"]["device"] == "sim:vortex"
        wave = cached[3]["arrays"]["samples"]
        assert len(wave["data"]) == 1000 and wave["x_unit"] == "s"  # the run's preview, plottable
        live = _messages(frames[1:])
        progress = [m for m in live if m["topic"] == "progress"]
        assert progress[-1]["payload"]["done"] == 5 and not progress[-1]["replay"]
        assert [m for m in live if m["topic"] == "result"][0]["payload"] == {
            "values": {"threshold_A": 4.98e-3}
        }
        status, state = _http("GET", bridge.url + "api/state")
        assert status == 200 and state["run"] == first["messages"][0]["run"]
        assert state["stats"]["web"]["connections"] == 1 and state["stats"]["stream"]["missed"] == 0
    finally:
        bridge.close()


def test_a_stalled_page_holds_up_nobody_and_costs_bounded_memory(live_run):
    """One page stops reading while the run publishes ~12 MB of previews: the run goes through
    all its steps, the publisher drops nothing, a reading page gets stop, the stalled page's
    queue holds one entry per key however much is published, and when it reads again it is told
    how many previews it lost."""
    bridge = BridgeThread(live_run.endpoint, flush_interval_s=0.0)
    try:

        async def scenario():
            async with aiohttp.ClientSession() as session:
                stalled = RawPage(bridge.url)
                healthy = await session.ws_connect(bridge.url + "ws")
                assert stalled.read_json()["type"] == "snapshot"  # then it stops reading
                assert wait_for(lambda: bridge.stats()["web"]["clients"] == 2)
                steps = await asyncio.to_thread(live_run.do, _publish_previews)
                await asyncio.to_thread(live_run.finish)  # stop
                frames = []
                while not any(m["topic"] == "stop" for m in _messages(frames)):
                    frames.append(await healthy.receive_json(timeout=30))
                async with session.get(bridge.url + "api/state") as response:
                    pages = sorted((await response.json())["pages"], key=lambda p: p["sent"])
                late = []
                while not any(m["topic"] == "stop" for m in _messages(late)):
                    late.append(await asyncio.to_thread(stalled.read_json))
                stalled.close()
                await healthy.close()
                return steps, pages, late

        steps, (stalled, healthy), late = asyncio.run(scenario())
        assert steps == 600 and live_run.publisher.dropped == 0
        assert stalled["sent"] < healthy["sent"] / 2, (stalled, healthy)  # it really stalled...
        # ...and waits with one of each key (preview, progress, stop, stats, maybe a log line)
        assert stalled["pending"] <= 6, stalled
        assert late[-1]["stats"]["client"]["lost"] > 300  # it is told what it missed
        stream = bridge.stats()["stream"]
        assert stream["missed"] == 0 and stream["rejected"] == 0
    finally:
        bridge.close()


def _publish_previews(ctx, n=600):
    """In the run: ``n`` steps, each a preview (~20 kB of JSON for a page) and progress."""
    rng = np.random.default_rng(0)
    for i in range(n):
        ctx.preview("response", spinlab.Waveform(rng.normal(size=4000), 1e-8))
        ctx.progress(i + 1, n)
        time.sleep(0.003)  # the rest of a step: the healthy page reads meanwhile
    return n


async def _reply(ws):
    """The server's answer to what the page sent, past any stream updates in between."""
    while (frame := await ws.receive_json(timeout=5))["type"] == "batch":
        pass
    return frame


async def _close_code(ws):
    while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT:
        pass
    return msg.data if msg.type is aiohttp.WSMsgType.CLOSE else msg.type


def test_hostile_pages_are_refused_and_counted_and_the_server_survives(live_run):
    live_run.do(lambda ctx: ctx.progress(1, 2))
    bridge = BridgeThread(live_run.endpoint, max_clients=4, keepalive_timeout_s=1.0)
    try:

        async def attack():
            closes = {}
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(bridge.url + "ws") as ws:  # huge frame: closed (1009)
                    await ws.receive_json(timeout=5)
                    await ws.send_str("x" * 100_000)
                    closes["huge_code"] = await _close_code(ws)
                async with session.ws_connect(bridge.url + "ws") as ws:
                    await ws.receive_json(timeout=5)
                    replies = []
                    for frame in ("not json", '{"type": "self-destruct"}', "[1, 2]"):
                        await ws.send_str(frame)
                        replies.append(await _reply(ws))
                    await ws.send_bytes(b"\x00\x01")
                    replies.append(await _reply(ws))
                    await ws.send_str('{"type": "ping"}')
                    replies.append(await _reply(ws))
                    for _ in range(6):  # keeps going: disconnected
                        await ws.send_str("?")
                    closes["spam_code"] = await _close_code(ws)
                flood = [await session.ws_connect(bridge.url + "ws") for _ in range(4)]
                refused = 0
                for _ in range(6):
                    try:
                        await session.ws_connect(bridge.url + "ws")
                    except aiohttp.WSServerHandshakeError as exc:
                        refused += exc.status == 503
                for ws in flood:
                    await ws.close()
                try:
                    await session.ws_connect(bridge.url + "ws", headers={"Origin": "http://evil.example"})
                except aiohttp.WSServerHandshakeError as exc:
                    closes["origin"] = exc.status
                async with session.get(bridge.url, headers={"Host": "evil.example:80"}) as r:
                    closes["host"] = r.status
            return closes, replies, refused

        closes, replies, refused = asyncio.run(attack())
        assert closes["huge_code"] == 1009
        assert [r["type"] for r in replies] == ["error"] * 4 + ["pong"]
        assert "self-destruct" in replies[1]["error"] and "binary" in replies[3]["error"]
        assert closes["spam_code"] == 1008
        assert refused == 6 and closes["origin"] == 403 and closes["host"] == 403

        # raw TCP: garbage, and idle connections that never send a request
        host, port = bridge.bridge.host, bridge.bridge.port
        junk = socket.create_connection((host, port))
        junk.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert b" 400 Bad Request" in junk.recv(100)
        idle = [socket.create_connection((host, port)) for _ in range(50)]
        time.sleep(1.5)  # keepalive_timeout: idle connections are closed by the server
        assert all(s.recv(1) == b"" for s in idle[:5])
        for s in [junk, *idle]:
            s.close()

        stats = bridge.stats()["web"]
        assert stats["rejected_frames"] == 1 + 4 + 6 - 1  # the 9th bad frame closes the page
        assert stats["refused_connections"] == 6 and stats["bad_origin"] == 1 and stats["bad_host"] == 1
        # still serving: the page, and a fresh WebSocket with the run's state
        frames = asyncio.run(_ws_frames(bridge.url, lambda f: len(f) >= 1))
        assert [m["topic"] for m in frames[0]["messages"] if m["topic"] != "monitor.stats"] == [
            "opening",
            "start",
            "progress",
        ]
        status, _ = _http("GET", bridge.url + "api/state")
        assert status == 200
    finally:
        bridge.close()


def test_hostile_monitoring_messages_do_not_reach_or_break_the_pages(tmp_path):
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    bridge = BridgeThread(f"tcp://127.0.0.1:{port}", flush_interval_s=0.05)
    try:

        def header(seq, payload, topic="result"):
            return msgpack.packb(
                {
                    "v": 1,
                    "topic": topic,
                    "run": "r",
                    "seq": seq,
                    "t": 1.0,
                    "replay": False,
                    "payload": payload,
                    "arrays": [],
                }
            )

        def send_all():
            pub.send_multipart([b"result", b"\xc1garbage"])  # not msgpack
            pub.send_multipart([b"odd", header(0, {"x": msgpack.Timestamp(1, 0)}, "odd")])  # not JSON-able
            pub.send_multipart([b"nonsense.topic", header(1, {"a": 1}, "nonsense.topic")])
            pub.send_multipart([b"result", header(2, {"threshold_A": 5e-3})])

        def seen():
            send_all()  # PUB drops until the bridge's subscription arrives: resend until seen
            return bridge.stats()["stream"]["received"] + bridge.stats()["stream"]["rejected"] >= 3

        assert wait_for(seen, interval_s=0.2)
        state = _http("GET", bridge.url + "api/state")[1]
        assert [(m["topic"], m["payload"]) for m in state["messages"]] == [
            ("nonsense.topic", {"a": 1}),
            ("result", {"threshold_A": 5e-3}),
        ]  # the odd one left out
        stats = state["stats"]
        assert stats["stream"]["rejected"] >= 1
        assert stats["stream"]["rejected"] + stats["web"]["unencodable"] >= 2
    finally:
        bridge.close()
        pub.close(0)
        ctx.term()


# --- control ----------------------------------------------------------------------------------
def test_control_needs_the_token_and_abort_stops_the_run_with_outputs_off(tmp_path, keys):
    device = spinlab.open_device("bench:emulated")
    run = controlled_run(tmp_path, device, keys)
    client = ControlClient(run.endpoint, keys["client_secret"], keys["server_public"])
    bridge = BridgeThread(run.monitor, control=client)
    read_only = BridgeThread(run.monitor)
    nobody = BridgeThread(
        run.monitor,
        control=ControlClient(
            "tcp://127.0.0.1:9", keys["client_secret"], keys["server_public"], timeout_s=0.2
        ),
    )
    try:
        url = bridge.url + "api/control/"
        assert run.wait_steps(3) and run.bias_seen_on
        status, body = _http("POST", read_only.url + "api/control/abort")
        assert status == 403 and "read-only" in body["error"]
        assert _http("POST", url + "abort")[0] == 401
        assert _http("POST", url + "abort", headers={"Authorization": "Basic abc"})[0] == 401
        wrong = bridge.bridge.token[:-1] + ("A" if bridge.bridge.token[-1] != "A" else "B")
        assert _http("POST", url + "abort", headers={"Authorization": f"Bearer {wrong}"})[0] == 403
        token = {"Authorization": f"Bearer {bridge.bridge.token}"}
        assert _http("POST", url + "abort", headers={**token, "Origin": "http://evil.example"})[0] == 403
        status, body = _http(
            "POST",
            nobody.url + "api/control/abort",
            headers={"Authorization": f"Bearer {nobody.bridge.token}"},
        )
        assert status == 502 and "no reply" in body["error"]
        before = run.steps_done
        assert run.wait_steps(before + 5), "refused requests must not disturb the run"
        status, body = _http("POST", url + "self-destruct", headers=token)
        assert status == 400 and "unknown command" in body["error"]
        status, body = _http("POST", url + "status", headers=token)
        assert status == 200 and body["state"] == "running" and body["status"]["progress"]["done"] >= before
        status, body = _http("POST", url + "abort", headers=token)
        assert status == 200 and body["state"] == "aborting"
        run.thread.join(10)
        assert isinstance(run.error, RunAborted) and "webmonitor" in str(run.error)
        assert not device.lab.source.output_on and not device.lab.awg.output_on
        with h5py.File(f"{run.path}/run.h5") as f:
            assert f.attrs["status"] == "aborted"
            assert f["responses"].shape[0] in (run.steps_done, run.steps_done + 1)
        web = bridge.stats()["web"]
        assert web["control_unauthorised"] == 2 and web["control_forbidden"] == 2
    finally:
        for b in (bridge, read_only, nobody):
            b.close()
        if run.thread.is_alive():
            client.request("abort")
            run.thread.join(10)
        run.publisher.close()


# --- the command line -------------------------------------------------------------------------
def test_web_addresses_default_to_loopback_and_warn_elsewhere(caplog):
    assert parse_web_address("8080") == ("127.0.0.1", 8080)
    assert parse_web_address(":0") == ("127.0.0.1", 0)
    assert parse_web_address("[::1]:9000") == ("::1", 9000)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, "spinlab.monitoring.web"):
        assert parse_web_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert "reachable from other machines" in caplog.text
    for bad in ("", "http://x:80", "host:99999", "a b:80"):
        with pytest.raises(ConfigError, match=r"\[HOST:\]PORT"):
            parse_web_address(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--web", "nonsense"], "[HOST:]PORT"),
        (["--web", "0", "--json"], "until Ctrl-C"),
        (["--web-control"], "goes with --web"),
        (["--web", "0", "--web-control"], "needs the run's --control"),
        (["--web", "0", "--key", "k"], "only apply with --web --web-control"),
        (["--key", "k"], "only apply with --web --web-control"),
    ],
)
def test_monitor_web_options_are_checked_before_anything_starts(args, message):
    result = runner.invoke(app, ["monitor", "tcp://127.0.0.1:5999", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_monitor_web_on_a_busy_port_fails_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = runner.invoke(
            app, ["monitor", "tcp://127.0.0.1:5999", "--web", f"127.0.0.1:{busy.getsockname()[1]}"]
        )
    assert result.exit_code == 2 and "cannot serve the web monitor" in result.stderr
    assert "pick another port" in result.stderr and "Traceback" not in result.output


def test_monitor_web_command_prints_the_link_with_the_token_and_serves_the_page(tmp_path, keys):
    command = [
        sys.executable,
        "-c",
        "from spinlab.cli import main; main()",
        "monitor",
        "tcp://127.0.0.1:5999",
        "--web",
        "127.0.0.1:0",
        "--web-control",
        "--control",
        "tcp://127.0.0.1:5998",
        "--key",
        str(keys["client_secret"]),
        "--server-key",
        str(keys["server_public"]),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("web monitor on http://127.0.0.1:") and "#token=" in line
        url, token = line.split()[3].split("#token=")
        assert "can pause, resume and abort" in proc.stdout.readline()

        async def fetch():
            async with aiohttp.ClientSession() as session:
                async with (
                    session.get(url) as page,
                    session.get(url + "static/vendor/uPlot.iife.min.js") as lib,
                ):
                    return page.status, await page.text(), page.headers, lib.status, await lib.text()

        status, html, headers, lib_status, lib = asyncio.run(fetch())
        assert (
            status == 200
            and 'id="progress-bar"' in html
            and "default-src 'self'" in headers["Content-Security-Policy"]
        )
        assert lib_status == 200 and "MIT License" in lib[:2000]
        assert _http("POST", url + "api/control/pause")[0] == 401
        assert (
            _http("POST", url + "api/control/pause", headers={"Authorization": f"Bearer {token}x"})[0] == 403
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "pages served" in err


# --- a page opened while the run opens its device (issue 24, item 2) ----------------------------
class _GatedRun:
    """A run through the engine whose device opening waits for ``open()``, as a bench's takes
    seconds (connect, identify, reset the instruments) between the publisher's bind and ``start``."""

    def __init__(self, tmp_path, monitor: str = "tcp://127.0.0.1:0", fail: bool = False) -> None:
        self.gate = threading.Event()
        self.publisher = MonitorPublisher(monitor)
        self.endpoint = self.publisher.endpoint
        self.outcome: dict = {}

        def slow_open(address, **options):
            assert self.gate.wait(30), "the test never let the device open"
            if fail:
                raise ConfigError("the bench did not answer *IDN?")
            return open_device(address, **options)

        engine = RunEngine(tmp_path / "runs", open_device=slow_open)
        plan = Plan("acquire", {"records": 2}, lambda ctx: {"records": 2})

        def run():
            try:
                self.outcome["result"] = engine.run(plan, "sim:vortex", subscribers=[self.publisher])
            except Exception as exc:
                self.outcome["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def open(self) -> None:
        self.gate.set()
        self.thread.join(30)

    def close(self) -> None:
        self.open()
        self.publisher.close()


def _state(bridge) -> dict:
    return _http("GET", bridge.url + "api/state")[1]


def _shows(bridge, topic: str) -> dict | None:
    """The bridge's state once a run is shown and has a ``topic`` message."""
    state = _state(bridge)
    return state if state["run"] and any(m["topic"] == topic for m in state["messages"]) else None


@pytest.mark.parametrize("monitor_first", [True, False], ids=["monitor first", "run first"])
def test_a_page_opened_while_the_run_opens_its_device_shows_the_run_at_once(tmp_path, monitor_first):
    """The user's report: monitor, then a run on the bench, page opened at once: "waiting for a
    run", 0 messages, until a reload. The run was there, opening its bench (seconds before
    ``start``), and its stream said nothing but stats with no run id. Now the engine's
    ``opening`` names the run before the device is opened: the snapshot and the page's first
    frame have it, whichever side started first."""
    bridge = run = None
    try:
        if monitor_first:  # the bridge connects to an address nobody has bound yet
            address = f"tcp://127.0.0.1:{free_port()}"
            bridge = BridgeThread(address, flush_interval_s=0.05)
            run = _GatedRun(tmp_path, address)
        else:
            run = _GatedRun(tmp_path)
            time.sleep(1.2)  # the run's first stats interval passes before anyone watches
            bridge = BridgeThread(run.endpoint, flush_interval_s=0.05)
        state = wait_for(lambda: _shows(bridge, "opening"), 5)
        assert state is not None, f"no run shown while its device opens: {_state(bridge)}"
        shown = {m["topic"]: m for m in state["messages"]}
        assert "start" not in shown and all(m["run"] == state["run"] for m in state["messages"])
        assert shown["opening"]["payload"]["plan"] == "acquire"
        assert shown["opening"]["payload"]["address"] == "sim:vortex"
        assert shown["opening"]["payload"]["config"] == {"records": 2}
        first = asyncio.run(_ws_frames(bridge.url, lambda frames: len(frames) >= 1))[0]
        assert first["type"] == "snapshot" and first["messages"]
        assert {m["run"] for m in first["messages"]} == {state["run"]}
        run.open()
        assert run.outcome["result"].run_id == state["run"]
        done = wait_for(lambda: _shows(bridge, "stop"))
        topics = [m["topic"] for m in done["messages"] if m["topic"] != "monitor.stats"]
        assert topics[:2] == ["opening", "start"] and topics[-1] == "stop" and done["run"] == state["run"]
    finally:
        if run is not None:
            run.close()
        if bridge is not None:
            bridge.close()


def test_a_run_whose_device_does_not_open_is_shown_failed_not_opening_forever(tmp_path):
    run = _GatedRun(tmp_path, fail=True)
    bridge = BridgeThread(run.endpoint, flush_interval_s=0.05)
    try:
        assert wait_for(lambda: _shows(bridge, "opening"), 5)
        run.open()
        assert isinstance(run.outcome["error"], ConfigError)
        state = wait_for(lambda: _shows(bridge, "stop"))
        stop = [m for m in state["messages"] if m["topic"] == "stop"][0]
        assert stop["payload"]["status"] == "failed"
        assert stop["payload"]["reason"] == "ConfigError: the bench did not answer *IDN?"
    finally:
        run.close()
        bridge.close()


def test_no_stats_message_announces_a_run_without_an_id():
    """Before a run has an id, a stats message made monitors show (and count) a run with no id."""
    pub = Publisher("tcp://127.0.0.1:0", stats_interval_s=0.05)
    with Subscriber(pub.endpoint) as sub:
        try:
            time.sleep(0.3)
            assert sub.drain() == []
            pub.run_id = "r1"
            msg = sub.recv(5)
            assert msg is not None and (msg.topic, msg.run_id) == ("monitor.stats", "r1")
        finally:
            pub.close()
