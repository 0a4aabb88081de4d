"""A real `spinlab monitor` process, fed hostile messages from a real ZeroMQ publisher socket,
survives them and keeps printing: the later messages still arrive and it exits 0."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]


def frames(topic: str, seq: int, payload=None, arrays=(), run="hostile-run", **header) -> list[bytes]:
    """Raw frames of one message; ``arrays``: ``(name, dtype, shape, bytes)``."""
    head = {
        "v": 1,
        "topic": topic,
        "run": run,
        "seq": seq,
        "t": 1.0e9 + seq,
        "payload": payload or {},
        "arrays": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s, _ in arrays],
        **header,
    }
    return [topic.encode(), msgpack.packb(head, use_bin_type=True), *(b for *_, b in arrays)]


def nested(depth: int):
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


#: (frames, accepted by decode?) in the order they are sent.
HOSTILE = [
    (frames("start", 0, {"kind": "[bold]fuzz[/]", "config": {"x": "[/]"}}), True),
    (frames("preview", 1, {"name": "empty", "unit": "[/V]"}, [("samples", "<f8", (0,), b"")]), True),
    (frames("preview", 2, {"name": "empty rows"}, [("samples", "<f4", (3, 0), b"")]), True),
    (frames("preview", 3, {"name": "wide empty"}, [("samples", "<f8", (2**20, 0), b"")]), True),
    (
        frames(
            "preview", 4, {"name": "complex"}, [("samples", "<c16", (2,), np.array([1j, np.nan]).tobytes())]
        ),
        True,
    ),
    (
        frames("preview", 5, {"name": "all nan"}, [("samples", "<f8", (3,), np.full(3, np.nan).tobytes())]),
        True,
    ),
    (frames("acquire.batch", 6, {}, [("x", "|b1", (2, 0), b""), ("y", "<i8", (1,), b"\xff" * 8)]), True),
    (frames("result", 7, {"deep": nested(30), "blob": b"\x00\xff", "big": 2**64 - 1, "nan": math.nan}), True),
    (frames("error", 8, {"type": "[/]", "message": "[red]unclosed"}), True),
    (frames("progress", 9, {"done": -5, "total": 2**64 - 1, "[/]": "[bold"}), True),
    (frames("instrument.status", 10, {"name": "[/scope]", "state": {"a": [1, 2]}}), True),
    (frames("result", 11, {"when": msgpack.Timestamp(1, 0)}), False),  # msgpack ext type
    (frames("result", 12, {"x": msgpack.ExtType(5, b"ab")}), False),
    (frames("result", 13, {"deep": nested(1000)}), False),  # nested too deep
    (frames("preview", 14, {}, [("samples", "<f8", (2**62, 2**62, 0), b"")]), False),
    (frames("stop", 15, {"status": "completed", "results": {"acc": 1.0}}), True),
]


@pytest.fixture
def publisher_socket():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)  # XPUB: the test sees the monitor's subscription arrive
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(0)
    ctx.term()


@pytest.mark.parametrize("view", ["--json", "live"])
def test_monitor_process_survives_hostile_messages_and_keeps_printing(publisher_socket, view):
    sock, address = publisher_socket
    args = [
        sys.executable,
        "-c",
        "from spinlab.cli import main; main()",
        "monitor",
        address,
        "--until-stop",
        "--timeout",
        "30",
        *(["--json"] if view == "--json" else []),
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sock.poll(30_000), "the monitor never subscribed"
        assert sock.recv()[:1] == b"\x01"  # XPUB hands a subscription up after applying it
        for message, _ in HOSTILE:
            sock.send_multipart(message)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    accepted = [m for m, ok in HOSTILE if ok]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    rejected = len(HOSTILE) - len(accepted)  # their sequence numbers are gaps: counted as missed too
    assert f"{len(accepted)} messages, {rejected} missed, {rejected} rejected" in err
    if view == "--json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["seq"] for line in lines] == [msgpack.unpackb(m[1])["seq"] for m in accepted]
        assert lines[-1]["topic"] == "stop" and lines[-1]["payload"]["status"] == "completed"
        assert lines[1]["arrays"]["samples"] == {"dtype": "<f8", "shape": [0], "data": []}
        assert lines[3]["arrays"]["samples"]["summarised"] and lines[3]["arrays"]["samples"]["min"] is None
        assert lines[7]["payload"]["blob"] == "00ff" and lines[7]["payload"]["nan"] is None
    else:
        assert "completed" in out and "[bold]fuzz[/]" in out and "[/scope]" in out
