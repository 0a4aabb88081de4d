"""The emulated instruments under stress: one session per client (over TCP too), capped input,
and every injected fault kind doing what the spec says, reproducibly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pyvisa

from spinlab import Device, SafetyLimits
from spinlab.errors import ConfigError
from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp
from spinlab.sim_backends.emulated.faults import SYNTAX, Fault, parse_faults

ROOT = Path(__file__).resolve().parents[1]


class Quiet(Device):
    def __init__(self):
        super().__init__(SafetyLimits())

    def _respond(self, drive, dt_s, conditions):
        return 0.1 * drive + 1e-3


@pytest.fixture
def lab():
    return EmulatedLab(Quiet(), seed=1, scope_noise_V=0.0)


@pytest.fixture
def served(lab):
    with serve_tcp(lab, "127.0.0.1", 0, 0, 0) as servers:
        yield lab, servers.ports


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    return data


def ask(session, message: bytes, wait_s: float = 0.0) -> bytes:
    session.write(message)
    if wait_s:
        session.wait_ready(wait_s)
    return session.read()


# --- one session per client ---------------------------------------------------------------------
def test_a_half_sent_command_blocks_nobody_and_is_not_glued(served):
    lab, ports = served
    with connect(ports["awg"]) as a, connect(ports["awg"]) as b:
        a.sendall(b"*ID")  # A holds an unterminated command
        time.sleep(0.05)
        t = time.monotonic()
        b.sendall(b"SYST:ERR?\n")
        assert read_line(b) == b'+0,"No error"\n'  # not "*IDSYST:ERR?" (-113), and at once
        assert time.monotonic() - t < 1.0
        a.sendall(b"N?\n")
        assert read_line(a).startswith(b"Agilent Technologies,33522B")


def test_a_half_sent_block_is_kept_apart_from_another_clients_block(served):
    lab, ports = served
    first = np.arange(1, 9, dtype="<i2").tobytes()
    second = (-np.arange(1, 9, dtype="<i2")).tobytes()
    with connect(ports["awg"]) as a, connect(ports["awg"]) as b:
        a.sendall(b"FORM:BORD SWAP\n")
        b.sendall(b"FORM:BORD SWAP\n")
        a.sendall(b"DATA:ARB:DAC first,#216" + first[:5])  # a block cut in the middle
        time.sleep(0.05)
        b.sendall(b"DATA:ARB:DAC second,#216" + second + b"\n*OPC?\n")
        assert read_line(b) == b"1\n"
        a.sendall(first[5:] + b"\n*OPC?\n")
        assert read_line(a) == b"1\n"
    np.testing.assert_array_equal(lab.awg.arbs["first"], np.arange(1, 9))
    np.testing.assert_array_equal(lab.awg.arbs["second"], -np.arange(1, 9))
    assert lab.awg.errors() == []


def test_replies_go_to_the_client_that_asked(served):
    lab, ports = served
    with connect(ports["scope"]) as a, connect(ports["scope"]) as b:
        a.sendall(b":TRIG:SWE NORM;:TRIG:EDGE:SOUR EXT;LEV 1;:SING;*OPC?\n")  # answered after the trigger
        time.sleep(0.05)
        b.sendall(b":OPER:COND?\n")
        assert read_line(b) == b"40\n"  # B's own reply, not A's deferred "1"
        lab.scope.trigger_input_edge("EXT")
        assert read_line(a) == b"1\n"


def test_an_oversize_message_is_discarded_without_buffering_it(lab):
    session = lab.scope.open_session()
    chunk = b"x" * (1 << 20)
    for _ in range(20):  # 20 MiB without a newline
        session.write(chunk)
        assert len(session.input) <= lab.scope.max_text_bytes + lab.scope.max_block_bytes
    assert ask(session, b"\n*IDN?\n").startswith(b"KEYSIGHT")
    assert lab.scope.errors()[0].startswith('-223,"Too much data; message longer than')


def test_an_oversize_block_is_refused_from_its_header(lab):
    awg = EmulatedLab(Quiet(), awg_memory_samples=1000).awg  # accepts blocks up to 2000 bytes
    session = awg.open_session()
    session.write(b"DATA:ARB:DAC big,#510000")
    for _ in range(10):
        session.write(b"\x01" * 1000)
        assert len(session.input) < 100  # thrown away as it arrives
    assert ask(session, b"\n*IDN?\n").startswith(b"Agilent")
    assert awg.errors() == [
        '-223,"Too much data; block of 10000 bytes exceeds the 2000-byte limit; message discarded"'
    ]
    assert awg.arbs == {}


def test_200_mib_without_a_newline_does_not_grow_spinlab_emulate():
    """Over TCP, against the real command: memory stays bounded and the instrument answers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from spinlab.cli import main; main()",
            "emulate",
            "--awg-port",
            "0",
            "--scope-port",
            "0",
            "--source-port",
            "0",
            "--analyser-port",
            "0",
            "--device",
            "sim:vortex?noise=0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ports = {
            role: int(res.split("::")[2]) for role, res in (proc.stdout.readline().split() for _ in range(3))
        }
        before = _rss_mb(proc.pid)
        with connect(ports["scope"]) as sock:
            sock.settimeout(30)
            chunk = b"y" * (4 << 20)
            for _ in range(50):
                sock.sendall(chunk)
            sock.sendall(b"\n*IDN?\n")
            assert read_line(sock).startswith(b"KEYSIGHT")
            sock.sendall(b":SYST:ERR?\n")
            assert read_line(sock).startswith(b'-223,"Too much data')
        assert _rss_mb(proc.pid) - before < 50
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# --- the fault spec ------------------------------------------------------------------------------
def test_spec_round_trip():
    faults = parse_faults(
        "silent@scope:at=40 , drop@awg:at=3:count=2,delay@source:s=0.2:p=0.5,corrupt@scope:count=inf"
    )
    assert faults == (
        Fault("silent", "scope", at=40),
        Fault("drop", "awg", at=3, count=2),
        Fault("delay", "source", s=0.2, p=0.5),
        Fault("corrupt", "scope", count=float("inf")),
    )
    assert parse_faults(",".join(str(f) for f in faults)) == faults
    assert parse_faults(None) == parse_faults("") == ()


@pytest.mark.parametrize(
    "spec,why",
    [
        ("bogus@awg", "unknown kind 'bogus'"),
        ("drop", "name the instrument"),
        ("drop@keithley", "name the instrument"),
        ("drop@awg:at=0", "at must be a whole number >= 1"),
        ("drop@awg:count=1.5", "count must be a whole number"),
        ("drop@awg:p=2", "p must be a probability"),
        ("drop@awg:s=1", "only delay takes s"),
        ("delay@awg:s=-1", "s must be a delay"),
        ("drop@awg:when=3", "unknown option"),
        ("drop@awg:at=1:at=2", "given twice"),
        ("truncate@awg", "only the scope sends"),
        ("corrupt@source", "corrupt acts on binary blocks"),
        ("overrange@awg", "overrange clips a scope record"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, why):
    with pytest.raises(ConfigError, match=why) as info:
        parse_faults(spec)
    assert SYNTAX in str(info.value)


def test_faults_are_reproducible_from_the_seed():
    def fired(seed):
        lab = EmulatedLab(Quiet(), seed=seed, faults="error@awg:p=0.3:count=inf")
        for _ in range(100):
            lab.awg.write(b"*CLS\n")
        return [event for _, event in lab.fault_log.entries]

    assert fired(1) == fired(1)
    assert fired(1) != fired(2)
    assert 15 < len(fired(1)) < 45


# --- each kind ---------------------------------------------------------------------------------
def test_delay_holds_the_reply(lab):
    lab.inject("delay@awg:s=0.3")
    session = lab.awg.open_session()
    t = time.monotonic()
    assert ask(session, b"*OPC?\n") == b""  # not yet
    assert session.wait_ready(2.0) and session.read() == b"1\n"
    assert time.monotonic() - t >= 0.29
    assert ask(session, b"*OPC?\n") == b"1\n"  # count=1: the next one is on time


def test_silent_and_nan(lab):
    lab.inject("silent@source:at=2,nan@source")
    session = lab.source.open_session()
    assert ask(session, b":SOUR:CURR?;:OUTP?\n") == b"+9.91E+37;0\n"  # 1st reply: its first number
    assert ask(session, b"*IDN?\n", wait_s=0.2) == b""  # 2nd reply: never sent
    assert ask(session, b":SOUR:CURR?\n") == b"+0.00000000000000E+00\n"
    assert lab.fault_log.entries == [("nan@source", 1), ("silent@source:at=2", 2)]


def test_drop_kills_the_connection_not_the_instrument(lab):
    lab.inject("drop@awg:at=2")
    rm = pyvisa.ResourceManager(lab.visa_library())
    first = rm.open_resource(lab.AWG_RESOURCE, read_termination="\n", write_termination="\n", timeout=500)
    assert first.query("*IDN?").startswith("Agilent")
    first.write("OUTP1 1")  # lost with the connection
    with pytest.raises(pyvisa.errors.VisaIOError, match="CONN_LOST"):
        first.query("*IDN?")
    second = rm.open_resource(lab.AWG_RESOURCE, read_termination="\n", write_termination="\n", timeout=500)
    assert second.query("OUTP1?") == "0"


def test_drop_over_tcp_resets_the_socket(served):
    lab, ports = served
    lab.inject("drop@awg")
    with connect(ports["awg"]) as sock:
        sock.sendall(b"*IDN?\n")
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            while sock.recv(4096):
                pass


def test_error_and_reset(lab):
    lab.inject("error@awg:at=2,reset@awg:at=3")
    session = lab.awg.open_session()
    session.write(b"OUTP1 ON\n")
    assert ask(session, b"SYST:ERR?\n") == b'-310,"System error; injected fault"\n'
    assert lab.awg.output_on
    assert ask(session, b"OUTP1?\n") == b"0\n"  # the 3rd message found the AWG reset


def _scope_block(lab, faults: str) -> bytes:
    lab.inject(faults)
    session = lab.scope.open_session()
    session.write(b":ACQ:SRAT 1e8;POIN 1000;:WAV:FORM WORD;BYT LSBF;UNS 0;:TRIG:SWE AUTO;:SING\n")
    session.write(b":WAV:DATA?\n")
    return session.read()


@pytest.mark.parametrize(
    "kind,check",
    [
        ("truncate", lambda raw: raw[:6] == b"#42000" and len(raw) == 6 + 1000),  # half, no terminator
        ("length", lambda raw: raw[:6] == b"#41998" and len(raw) == 6 + 1998 + 1),  # consistent, short
        ("corrupt", lambda raw: raw[:6] == b"#42000" and 6 + 2000 + 1 < len(raw) <= 6 + 2008 + 1),
    ],
)
def test_block_faults(lab, kind, check):
    raw = _scope_block(lab, f"{kind}@scope")
    assert check(raw), raw[:12]


def test_corrupt_received_block_keeps_its_length(lab):
    lab.inject("corrupt@awg")
    codes = np.arange(-500, 500, dtype="<i2")
    lab.awg.write(b"FORM:BORD SWAP;:DATA:ARB:DAC d,#42000" + codes.tobytes() + b"\n")
    stored = lab.awg.arbs["d"]
    assert stored.size == codes.size and 1 <= np.count_nonzero(stored != codes) <= 8


def test_overrange_clips_a_stretch_of_the_record(lab):
    raw = _scope_block(lab, "overrange@scope")
    codes = np.frombuffer(raw[6:-1], dtype="<i2") // 256
    clipped = np.flatnonzero(codes == 127)
    assert clipped.size == 20 and np.all(np.diff(clipped) == 1)
