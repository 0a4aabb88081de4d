"""The station lock: one lock per instrument however its resource string is spelled, taken by
`spinlab acquire` processes on a station served by `spinlab emulate` over TCP; and what it does
not cover (another client on the instrument's port), which the run survives in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
from tcp_helpers import (
    acquire_args,
    ask,
    assert_outputs_off_and_ramped,
    emulator,
    spinlab_process,
    station,
    wait_for_steps,
)

from spinlab.locks import ResourceLocks, canonical

__all__ = ["emulator", "station"]  # fixtures, used by name


@pytest.fixture(autouse=True)
def private_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINLAB_LOCK_DIR", str(tmp_path / "locks"))


@pytest.mark.parametrize(
    "one, other",
    [
        ("TCPIP0::localhost::5025::SOCKET", "TCPIP::127.0.0.1::5025::SOCKET"),
        ("tcpip::LOCALHOST::5025::socket", "TCPIP0::127.0.0.1::05025::SOCKET"),
        ("GPIB::24", "GPIB0::24::INSTR"),
        ("gpib0::24::instr", "GPIB0::24::INSTR"),
        ("TCPIP::127.0.0.1", "TCPIP0::localhost::inst0::INSTR"),
        ("USB::0x0957::0x1796::my123::INSTR", "USB0::2391::6038::MY123::0::INSTR"),
        ("ASRL1::INSTR", "asrl1::instr"),
        ("TCPIP::Lab-AWG.invalid::5025::SOCKET", "TCPIP0::lab-awg.invalid::5025::SOCKET"),  # does not resolve
    ],
)
def test_every_spelling_of_one_instrument_is_one_lock(one, other):
    assert canonical(one) == canonical(other)
    with ResourceLocks([one], what="station 'a'"):
        with pytest.raises(Exception, match=f"instrument {other} is in use by PID {os.getpid()}"):
            ResourceLocks([other], what="station 'b'")


@pytest.mark.parametrize(
    "one, other",
    [
        ("TCPIP::127.0.0.1::5025::SOCKET", "TCPIP::127.0.0.1::inst0::INSTR"),  # socket vs VXI-11
        ("TCPIP::127.0.0.1::5025::SOCKET", "TCPIP::127.0.0.1::5026::SOCKET"),
        ("GPIB0::24::INSTR", "GPIB1::24::INSTR"),
        ("ASRL1::INSTR", "ASRL2::INSTR"),
    ],
)
def test_different_instruments_are_different_locks(one, other):
    assert canonical(one) != canonical(other)
    with ResourceLocks([one]), ResourceLocks([other]):
        pass


def test_one_station_naming_an_instrument_twice_takes_its_lock_once():
    with ResourceLocks(["TCPIP::localhost::5025::SOCKET", "TCPIP0::127.0.0.1::5025::SOCKET"]) as held:
        assert len(held.resources) == 1


def _respelled(station, name):
    """The same station file with every resource spelled another way: TCPIP0 and localhost."""
    text = station.read_text().replace('"TCPIP::127.0.0.1::', '"TCPIP0::localhost::')
    assert text.count("TCPIP0::localhost::") == 6  # AWG, scope, source, magnet, gaussmeter, analyser
    path = station.with_name(name)
    path.write_text(text)
    return path


def test_a_second_acquire_on_another_spelling_of_the_station_is_refused_at_once_naming_the_first(
    tmp_path, emulator, station
):
    first = spinlab_process(*acquire_args(_respelled(station, "localhost.toml"), tmp_path / "a", 0.2))
    try:
        run_dir = wait_for_steps(tmp_path / "a", 2, first)
        t = time.monotonic()
        second = spinlab_process(*acquire_args(station, tmp_path / "b"))
        _, err = second.communicate(timeout=60)
        elapsed = time.monotonic() - t
        assert second.returncode == 2, err
        line = err.strip()
        assert "\n" not in line and "Traceback" not in err
        assert "is in use by" in line and f"PID {first.pid}" in line and f"run {run_dir.name}" in line
        assert "TCPIP::127.0.0.1::" in line and "which opened it as TCPIP0::localhost::" in line
        assert elapsed < 15  # refused at open (the interpreter's start-up is most of it)
        assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
        assert first.poll() is None  # the holder was not disturbed
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    assert_outputs_off_and_ramped(emulator)


def test_a_raw_client_garbling_a_locked_instrument_fails_the_run_in_one_line_outputs_off(
    tmp_path, emulator, station
):
    """The lock keeps out spinlab processes, not other clients of the instrument's port (that is
    the instrument's own lock or a firewall): the run notices through the AWG's error queue."""
    proc = spinlab_process(*acquire_args(station, tmp_path / "runs", 0.2))
    wait_for_steps(tmp_path / "runs", 2, proc)
    _, host, port, _ = emulator["awg"].split("::")
    done = threading.Event()

    def garble():
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            while not done.is_set():
                sock.sendall(b"\xff\xfeNONSENSE 12;FOO?\n")
                time.sleep(0.005)

    intruder = threading.Thread(target=garble, daemon=True)
    intruder.start()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        done.set()
        intruder.join(timeout=10)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "AWG" in last, err
    ask(emulator["awg"], "*CLS;*OPC?")
    assert_outputs_off_and_ramped(emulator)
