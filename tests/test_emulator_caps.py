"""`spinlab emulate` under hostile clients: what one message or a flood of connections can make
the emulator hold stays bounded, the client gets the SCPI error an instrument gives, and a
normal client is served afterwards. The emulator runs in its own process; its memory and
threads are read from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest
from tcp_helpers import ask, emulated_instruments

from spinlab.sim_backends.emulated.tcp_server import MAX_CONNECTIONS

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads the emulator's memory and threads from /proc"
)


@pytest.fixture(scope="module")
def served():
    """A private emulator: (process, resources)."""
    with emulated_instruments() as served:
        yield served


def status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (VmRSS, VmHWM in kB; Threads)."""
    with open(f"/proc/{pid}/status") as fh:
        line = next(line for line in fh if line.startswith(f"{field}:"))
    return int(line.split()[1])


def connect(resource: str) -> socket.socket:
    _, host, port, _ = resource.split("::")
    return socket.create_connection((host, int(port)), timeout=5)


def drain(sock: socket.socket, quiet_s: float = 1.0, limit: int = 300 << 20) -> int:
    """Bytes received until the connection stays quiet for ``quiet_s`` (or closes)."""
    sock.settimeout(quiet_s)
    total = 0
    while total < limit:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        total += len(chunk)
    return total


def test_one_message_of_twenty_thousand_waveform_queries_gets_a_bounded_answer_and_too_much_data(served):
    proc, resources = served
    scope = resources["scope"]
    assert ask(scope, ":DIG;*CLS;*OPC?") == "1"
    before_kB = status(proc.pid, "VmHWM")
    with connect(scope) as sock:
        sock.sendall(b":WAV:DATA?;" * 20_000 + b"\n")
        received = drain(sock)
    grown_MB = (status(proc.pid, "VmHWM") - before_kB) / 1024
    assert received <= 2 << 20, f"{received / 1e6:.0f} MB of replies to one message"
    assert grown_MB < 64, f"the emulator's peak memory grew by {grown_MB:.0f} MB"
    assert ask(scope, "SYST:ERR?").startswith("-223,")
    assert ask(scope, "*IDN?").startswith("KEYSIGHT")


def test_a_message_of_many_tiny_blocks_is_parsed_in_linear_time(served):
    _, resources = served
    scope = resources["scope"]
    ask(scope, "*CLS;*OPC?")
    start = time.monotonic()
    with connect(scope) as sock:
        sock.settimeout(30)
        # 400 kB: hours when each block rescanned the rest of the message
        sock.sendall(b"#10;" * 100_000 + b"\n*IDN?\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            assert chunk
            reply += chunk
    assert reply.startswith(b"KEYSIGHT")
    assert time.monotonic() - start < 15
    assert ask(scope, "SYST:ERR?").startswith("-113,")


def test_connections_beyond_the_cap_are_closed_and_a_client_is_served_afterwards(served):
    proc, resources = served
    awg = resources["awg"]
    threads = status(proc.pid, "Threads")
    held = [connect(awg) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # every slot is served
            sock.sendall(b"*IDN?\n")
            assert sock.recv(4096).startswith(b"Agilent")
        extra = [connect(awg) for _ in range(40)]
        for sock in extra:  # one more is closed at once, not served
            with sock:
                sock.settimeout(5)
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # closed either way
                    sock.sendall(b"*IDN?\n")
                    assert sock.recv(4096) == b""
        assert status(proc.pid, "Threads") <= threads + MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the slots come back as the server notices the closed connections
        try:
            assert ask(awg, "*IDN?").startswith("Agilent")
            break
        except (AssertionError, ConnectionResetError, BrokenPipeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
