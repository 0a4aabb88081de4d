"""The event stream over real loopback sockets: what a watcher of a sim:vortex run receives."""

import logging
import threading
import time

import h5py
import numpy as np
import pytest
import zmq

import spinlab
from spinlab import Waveform
from spinlab.engine import Plan, RunEngine
from spinlab.errors import MessageFormatError
from spinlab.monitoring import Publisher, Subscriber, messages, preview
from spinlab.monitoring.documents import MonitorPublisher

MONITOR = "tcp://127.0.0.1:0"  # port 0: the OS picks a free port


@pytest.fixture
def vortex():
    with spinlab.open_device("sim:vortex?seed=1") as dev:
        yield dev


def drives(n_steps, n_samples=400, seed=3):
    rng = np.random.default_rng(seed)
    return [Waveform(rng.uniform(-0.3, 0.3, n_samples), 100e-9) for _ in range(n_steps)]


def collect(sub, until_topic, timeout_s=5.0):
    """Messages up to and including the first one with ``until_topic``."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(0.2)
        if msg is None:
            continue
        got.append(msg)
        if msg.topic == until_topic:
            return got
    raise AssertionError(f"no {until_topic!r} within {timeout_s} s; got {[m.topic for m in got]}")


def acquire_plan(steps, config=None, extra=None):
    """A small acquisition plan: respond, record, preview, progress; ``extra(ctx)`` at the end."""

    def body(ctx):
        for i, drive in enumerate(steps):
            data = ctx.measure(
                "responses",
                lambda dev, d=drive: {"responses": dev.respond(d, {"bias_A": 7.5e-3}).samples[None, :]},
            )
            ctx.preview("response", Waveform(data["responses"][0], drive.dt_s))
            ctx.progress(i + 1, len(steps))
        if extra is not None:
            extra(ctx)

    return Plan("acquire", config or {}, body)


def connected(topics=None, **options):
    """A MonitorPublisher and a Subscriber whose subscription has reached it (a first message
    went through), so a run started now is watched from its first message."""
    pub = MonitorPublisher(MONITOR, **options)
    sub = Subscriber(pub.endpoint, topics=("",) if topics is None else [*topics, "test."])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish("test.hello", {})
        msg = sub.recv(0.1)
        if msg is not None and msg.topic == "test.hello":
            break
    else:
        raise AssertionError("the subscriber never connected")
    return pub, sub


def run_watched(tmp_path, plan, device, topics=None, **options):
    """Run ``plan`` with a connected watcher; the watcher's messages from start to stop."""
    pub, sub = connected(topics, **options)
    try:
        result = RunEngine(tmp_path).run(plan, device, subscribers=[pub])
        got = collect(sub, "stop")
    finally:
        pub.close()
        sub.close()
    got = [m for m in got if not m.topic.startswith("test.")]
    return result, got, sub


def test_watcher_sees_start_progress_stop_with_arrays_equal_to_the_run_file(tmp_path, vortex):
    plan = acquire_plan(drives(5), {"steps": 5, "bias_A": 7.5e-3}, lambda ctx: ctx.result(steps_done=5))
    result, got, sub = run_watched(tmp_path, plan, vortex)
    opening, start = got[:2]
    assert opening.topic == "opening" and opening.payload["plan"] == "acquire" and not opening.replay
    assert start.topic == "start" and not start.replay
    assert start.payload["kind"] == "acquire" and start.payload["config"]["steps"] == 5
    assert [m.seq for m in got] == list(range(opening.seq, opening.seq + len(got)))  # in order, no gaps
    assert sub.missed == 0 and sub.rejected == 0
    topics = [m.topic for m in got if m.topic != "monitor.stats"]
    assert topics == ["opening", "start"] + ["preview", "progress"] * 5 + ["result", "stop"]
    progress = [m.payload for m in got if m.topic == "progress"]
    assert [(p["done"], p["total"]) for p in progress] == [(i, 5) for i in range(1, 6)]
    stop = got[-1].payload
    assert stop["status"] == "completed" and stop["monitor_dropped"] == 0
    assert stop["results"] == {"steps_done": 5}
    previews = [m for m in got if m.topic == "preview"]
    with h5py.File(result.run_file) as f:
        saved = f["responses"][()]
        assert f.attrs["status"] == "completed"
    assert saved.shape == (5, 400)
    for row, msg in zip(saved, previews):
        assert msg.payload["decimation"] == "none"
        assert msg.arrays["samples"].dtype == np.float64
        np.testing.assert_array_equal(msg.arrays["samples"], row)


def test_decimated_previews_equal_the_preview_of_the_saved_data(tmp_path, vortex):
    result, got, _ = run_watched(
        tmp_path,
        acquire_plan(drives(2, n_samples=5000)),
        vortex,
        topics=["start", "stop", "preview"],
        preview_points=200,
    )
    previews = [m for m in got if m.topic == "preview"]
    with h5py.File(result.run_file) as f:
        saved = f["responses"][()]
    assert len(previews) == 2
    for row, msg in zip(saved, previews):
        expected = preview(Waveform(row, 100e-9), 200)
        assert msg.arrays["samples"].shape == (200,)
        np.testing.assert_array_equal(msg.arrays["samples"], expected.samples)
        assert msg.payload["dt_s"] == pytest.approx(expected.dt_s)
        assert msg.payload["n_original"] == 5000


def test_late_joiner_gets_config_and_latest_state_without_waiting_for_an_event(tmp_path, vortex):
    reached, release = threading.Event(), threading.Event()

    def extra(ctx):
        ctx.instrument_status("awg", output_on=True, amplitude_V=0.3)
        ctx.instrument_status("scope", armed=False)
        ctx.result(mean_V=0.01)
        reached.set()
        assert release.wait(10)
        ctx.progress(4, 4)

    pub, early = connected()
    worker = threading.Thread(
        target=RunEngine(tmp_path).run,
        daemon=True,
        args=(acquire_plan(drives(3), {"steps": 3, "seed": 11}, extra), vortex),
        kwargs={"subscribers": [pub]},
    )
    worker.start()
    try:
        assert reached.wait(10)
        collect(early, "result")
        late = Subscriber(
            pub.endpoint, topics=["start", "stop", "progress", "preview", "instrument.", "result"]
        )
        state = {}
        wanted = {
            ("start", None),
            ("progress", None),
            ("preview", "response"),
            ("instrument.status", "awg"),
            ("instrument.status", "scope"),
            ("result", None),
        }
        deadline = time.monotonic() + 5
        while not wanted <= set(state) and time.monotonic() < deadline:
            msg = late.recv(0.2)
            if msg is not None:
                assert msg.replay, "nothing new was published: all of it must come from the cache"
                state[messages.cache_key(msg.topic, msg.payload)] = msg
        assert state[("start", None)].payload["config"] == {"steps": 3, "seed": 11}
        assert state[("progress", None)].payload == {"done": 3, "total": 3, "stage": ""}
        assert state[("preview", "response")].arrays["samples"].shape == (400,)
        assert state[("instrument.status", "awg")].payload["amplitude_V"] == 0.3
        assert state[("instrument.status", "scope")].payload["armed"] is False
        assert state[("result", None)].payload == {"values": {"mean_V": 0.01}}
        seqs = [m.seq for m in sorted(state.values(), key=lambda m: m.seq)]
        assert seqs == sorted(seqs)

        release.set()  # the next live event: both see it once, nobody sees a gap
        assert late.recv(2).payload == {"done": 4, "total": 4, "stage": ""}
        msg = early.recv(2)
        while msg.topic == "monitor.stats":
            msg = early.recv(2)
        assert (msg.topic, msg.replay) == ("progress", False)  # the replays were de-duplicated
        assert early.duplicates >= 6 and early.missed == 0 and late.missed == 0
        late.close()
    finally:
        release.set()
        worker.join(10)
        early.close()
        pub.close()


def test_stalled_subscriber_never_slows_publishing_nor_other_watchers():
    pub = Publisher(MONITOR, run_id="r", queue_size=64, sndhwm=10)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)  # subscribes and never reads
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(pub.endpoint)
    healthy = Subscriber(pub.endpoint)
    try:
        pub.publish("start", {})
        assert healthy.recv(3).topic == "start"
        big = np.zeros(10_000)  # 80 kB per message: the stalled peer's buffers fill at once
        for i in range(500):  # a blocking send would hang here for good
            pub.publish("preview", {"name": "x", "i": i}, {"samples": big})
        pub.publish("stop", {"status": "completed"})
        got = collect(healthy, "stop")
        # what this watcher lost in the burst shows as gaps and a resync, never as disorder
        assert got[-1].payload["status"] == "completed"
        seen = [m.payload["i"] for m in got if m.topic == "preview" and not m.replay]
        assert seen == sorted(seen) and seen
        assert healthy.missed == 0 or healthy.resyncs >= 1
    finally:
        t0 = time.perf_counter()
        pub.close()
        assert time.perf_counter() - t0 < 10  # linger is bounded even with a stalled peer
        healthy.close()
        stalled.close(0)
        ctx.term()


def test_queue_overflow_drops_the_oldest_and_reports_it_in_run_stop():
    pub = Publisher(MONITOR, run_id="r", queue_size=4)
    sub = Subscriber(pub.endpoint)
    try:
        pub.publish("start", {"kind": "demo"})
        assert sub.recv(3).topic == "start"
        release = threading.Event()
        send_queued = pub._send_queued
        pub._send_queued = lambda: (release.wait(5), send_queued())  # a sender stuck for a while
        for i in range(1, 11):
            pub.publish("progress", {"done": i, "total": 10})
        pub.publish("stop", {"status": "completed"})
        assert pub.dropped == 7  # 11 messages into a queue of 4: the 7 oldest went
        release.set()
        got = collect(sub, "stop")
    finally:
        pub.close()
        sub.close()
    assert [m.seq for m in got] == [8, 9, 10, 11]  # the newest state and stop got through
    assert got[-1].payload == {"status": "completed", "monitor_dropped": 7}
    assert sub.missed == 7


def test_hostile_messages_on_the_publisher_socket_are_counted_not_fatal():
    pub = Publisher(MONITOR, run_id="r", stats_interval_s=0.05)
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)  # XSUB may send arbitrary upstream messages
    xsub.connect(pub.endpoint)
    try:
        xsub.send(b"\x07not a subscription")
        xsub.send(b"\x01" + b"x" * 5000)  # beyond the publisher's MAXMSGSIZE: connection dropped
        deadline = time.monotonic() + 3
        while pub.stats()["bad_inbound"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pub.stats()["bad_inbound"] == 1
        with Subscriber(pub.endpoint) as sub:  # still publishing to well-behaved watchers
            pub.publish("progress", {"done": 1, "total": 2})
            msg = sub.recv(3)
            while msg is not None and msg.topic != "progress":
                msg = sub.recv(3)
            assert msg is not None and msg.payload["done"] == 1
    finally:
        xsub.close(0)
        ctx.term()
        pub.close()


def test_subscriber_rejects_malformed_frames_and_keeps_reading():
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.PUB)
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    try:
        good = messages.encode("progress", "r", 0, time.time(), {"done": 1, "total": 1})
        bad_header = [b"progress", b"\xc1\xc1garbage"]
        wrong_version = [b"progress", messages.msgpack.packb({"v": 99, "topic": "progress"})]
        lying_shape = messages.encode("preview", "r", 1, time.time(), {}, {"x": np.arange(4.0)})
        lying_shape[2] = b"\x00" * 8
        deadline = time.monotonic() + 5
        msg = None
        while msg is None and time.monotonic() < deadline:  # until the connection is up
            rogue.send_multipart(bad_header)
            rogue.send_multipart(wrong_version)
            rogue.send_multipart(lying_shape)
            rogue.send_multipart(good)
            msg = sub.recv(0.1)
        assert msg is not None and msg.payload == {"done": 1, "total": 1}
        assert sub.rejected >= 3
    finally:
        sub.close()
        rogue.close(0)
        ctx.term()


def test_spinlab_log_records_are_published_while_the_run_is_active(tmp_path):
    plan = Plan(
        "demo",
        {},
        lambda ctx: logging.getLogger("spinlab.protocols.demo").warning("bias drifted by %d uA", 3),
        needs_device=False,
    )
    _, got, _ = run_watched(tmp_path, plan, None, topics=["start", "stop", "log"])
    logs = [m.payload for m in got if m.topic == "log"]
    assert logs and logs[0]["message"] == "bias drifted by 3 uA" and logs[0]["level"] == "WARNING"
    handlers = logging.getLogger("spinlab").handlers
    assert not any(type(h).__name__ == "PublishingHandler" for h in handlers)


def test_non_loopback_bind_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="spinlab.monitoring"):
        pub = Publisher("tcp://0.0.0.0:0", run_id="r")
        pub.close()
    assert any("reachable from other machines" in r.message for r in caplog.records)
    pub = Publisher("0", run_id="r")  # a bare port binds to loopback
    try:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
    finally:
        pub.close()


def test_acquire_protocol_stream_matches_its_run_file(tmp_path, vortex):
    from spinlab.protocols import acquire

    config = acquire.AcquireConfig(duration_s=4e-4, record_s=1e-4, conditions={"bias_A": [7e-3, 8e-3]})
    result, got, sub = run_watched(tmp_path, acquire.plan(config), vortex)
    assert result.summary["recordings"] == 4 and sub.missed == 0
    progress = [
        (m.payload["stage"], m.payload["done"], m.payload["total"]) for m in got if m.topic == "progress"
    ]
    assert [p for p in progress if p[0] != "figures"] == [("acquire", 1, 2), ("acquire", 2, 2)]
    assert [p for p in progress if p[0] == "figures"] == [("figures", 0, 1), ("figures", 1, 1)]
    batches = [m for m in got if m.topic == "acquire.batch"]
    with h5py.File(result.run_file) as f:
        for k, msg in enumerate(batches):  # each batch message carries its first recording
            np.testing.assert_array_equal(msg.arrays["drive_V"], f["drive_V"][2 * k])
            np.testing.assert_array_equal(msg.arrays["response_V"], f["response_V"][2 * k])


def test_publisher_bounds_its_queue_in_bytes_and_refuses_oversized_messages():
    pub = Publisher(MONITOR, run_id="r", queue_bytes=100_000)
    try:
        release = threading.Event()
        send_queued = pub._send_queued
        pub._send_queued = lambda: (release.wait(5), send_queued())
        for i in range(5):  # 40 kB each: only two fit in 100 kB
            pub.publish("preview", {"name": "w", "i": i}, {"samples": np.zeros(5000)})
        assert pub.dropped == 3 and pub.stats()["queued"] == 2
        with pytest.raises(MessageFormatError, match="exceeds the monitor queue"):
            pub.publish("preview", {"name": "w"}, {"samples": np.zeros(20_000)})
        with pytest.raises(MessageFormatError, match="topic"):
            pub.publish("Bad Topic", {})
        assert pub.stats()["rejected"] == 2
        release.set()
    finally:
        pub.close()


def test_a_flood_of_subscriptions_does_not_become_a_flood_of_replays():
    pub = Publisher(MONITOR, run_id="r", max_replays_per_s=5)
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xsub.connect(pub.endpoint)
    try:
        pub.publish("start", {"config": {}})
        time.sleep(0.1)
        for _ in range(200):
            xsub.send(b"\x01")
        deadline = time.monotonic() + 3
        while pub.stats()["subscriptions"] < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = pub.stats()
        assert stats["subscriptions"] == 200
        assert stats["replayed"] <= 10 and stats["replays_refused"] >= 190
    finally:
        xsub.close(0)
        ctx.term()
        pub.close()


def test_a_busy_port_is_a_config_error_that_says_what_to_do():
    pub = Publisher(MONITOR, run_id="r")
    try:
        with pytest.raises(spinlab.ConfigError, match="pick another port"):
            Publisher(pub.endpoint, run_id="r2")
        with pytest.raises(spinlab.ConfigError, match="tcp://127.0.0.1:5555"):
            Publisher("udp://somewhere:1", run_id="r3")
    finally:
        pub.close()


def test_a_watcher_that_saw_a_gap_resyncs_from_the_cache():
    pub = Publisher(MONITOR, run_id="r")
    sub = Subscriber(pub.endpoint, resync_s=0.0)
    try:
        pub.publish("start", {"config": {"n": 1}})
        assert sub.recv(3).topic == "start"
        release = threading.Event()
        send_queued = pub._send_queued
        pub._send_queued = lambda: (release.wait(5), send_queued())
        pub.queue_size = 1  # hold the sender and overflow: progress 1 is dropped, 2 is sent
        pub.publish("progress", {"done": 1, "total": 2})
        pub.publish("progress", {"done": 2, "total": 2})
        release.set()
        msg = sub.recv(3)
        assert msg.payload == {"done": 2, "total": 2} and sub.missed == 1 and sub.resyncs == 1
        # the resync replays the cache: start and progress are copies of what it has
        deadline = time.monotonic() + 3
        while sub.duplicates < 2 and time.monotonic() < deadline:
            assert sub.recv(0.1) is None
        assert sub.duplicates == 2 and pub.stats()["subscriptions"] == 2
    finally:
        pub.close()
        sub.close()
