"""Signals during an acquisition at 0.3 T on a station served by `spinlab emulate` over TCP: the
run stops, the bias ramps down first, then the magnet current ramps to its park value at no more
than the station's rate (read back from the emulated supply's own log of every set point with its
time); after a SIGKILL the next open ramps from the supply's present current."""

from __future__ import annotations

import signal
import socket
import threading
import time

import numpy as np
import pytest
from tcp_helpers import acquire_args, ask, emulator, spinlab_process, station, wait_for_steps

from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import load_station

__all__ = ["emulator", "station"]  # fixtures, used by name

FIELD_T = 0.3
#: How late the emulator may log a set point that arrived over TCP: its process computes the last
#: capture at the same time (one GIL), so a few set points can be logged together. Any stretch of
#: the ramp must then be no faster than the rate over its logged duration plus this.
STALL_S = 0.06


def connect(resource: str) -> socket.socket:
    _, host, port, _ = resource.split("::")
    return socket.create_connection((host, int(port)), timeout=5)


def query(sock: socket.socket, message: str) -> str:
    sock.sendall(message.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "the emulator closed the connection"
        data += chunk
    return data.decode().strip()


def magnet_log(emulator) -> np.ndarray:
    """(time s, set point A) rows of every current the supply was given."""
    values = [float(v) for v in ask(emulator["magnet"], "DIAG:CURR:LOG?").split(",") if v]
    return np.array(values).reshape(-1, 2)


def assert_parked_within_rate(emulator, magnet, plateau_A: float) -> None:
    """The supply off at 0 A; from the plateau down to 0 every step within the ramp step and the
    rate (each step after its pause; the whole ramp no faster than the rate)."""
    assert ask(emulator["magnet"], "OUTP?") == "0"
    assert float(ask(emulator["magnet"], "CURR?")) == 0.0
    assert abs(float(ask(emulator["magnet"], "MEAS:CURR?"))) <= 1e-3 * magnet.max_current_A
    log = magnet_log(emulator)
    top = int(np.argmax(log[:, 1]))
    assert log[top, 1] == pytest.approx(plateau_A, abs=0.05)
    down = log[top:]
    steps, gaps = np.abs(np.diff(down[:, 1])), np.diff(down[:, 0])
    assert down[-1, 1] == 0.0 and np.all(np.diff(down[:, 1]) <= 0)
    assert steps.max() <= magnet.ramp_step_A * (1 + 1e-6), "the field was stepped"
    moved, elapsed = np.cumsum(np.r_[0.0, steps]), down[:, 0]
    allowed = magnet.rate_A_per_s * (elapsed[None, :] - elapsed[:, None] + STALL_S) * (1 + 1e-6)
    beaten = np.triu(moved[None, :] - moved[:, None] > allowed, 1)
    assert not beaten.any(), f"a stretch of the ramp beat the rate: gaps {gaps}"
    assert plateau_A / (down[-1, 0] - down[0, 0]) <= magnet.rate_A_per_s * (1 + 1e-6)


class Watch:
    """Polls the bias source's output and the magnet's set point over their own sockets while a
    run stops: whether the field moved while the bias was still on."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.samples: list[tuple[bool, float]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        source, magnet = (connect(self.emulator[role]) for role in ("source", "magnet"))
        with source, magnet:
            while not self.done.is_set():
                bias_on = query(source, "OUTP?") == "1"
                self.samples.append((bias_on, float(query(magnet, "CURR?"))))
                time.sleep(0.002)

    def stop(self) -> list[tuple[bool, float]]:
        self.done.set()
        self.thread.join(timeout=10)
        return self.samples


SIGNALS = [
    signal.SIGINT,
    pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
    pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_0_3_T_ramps_the_bias_down_then_parks_the_field_within_the_rate(
    tmp_path, emulator, station, signum
):
    magnet = load_station(station).magnet
    ask(emulator["magnet"], "DIAG:CURR:LOG:CLE;*OPC?")
    proc = spinlab_process(
        *acquire_args(station, tmp_path / "runs", duration_s=0.05), "--field-T", str(FIELD_T)
    )
    try:
        wait_for_steps(tmp_path / "runs", 2, proc, timeout_s=120)
        watch = Watch(emulator)
        time.sleep(0.2)
        proc.send_signal(signum)
        proc.wait(timeout=120)
        samples = watch.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 128 + signum, err
    assert "interrupted by" in err and "Traceback" not in err, err
    plateau = max(level for _, level in samples)
    assert plateau == pytest.approx((FIELD_T - magnet.remanence_T) / magnet.T_per_A, abs=0.05)
    # the bias went off before the field left its plateau, and never came back on
    first_down = next(i for i, (_, level) in enumerate(samples) if level < plateau - 1e-9)
    assert not any(on for on, _ in samples[first_down:]), "the field moved while the bias was on"
    assert ask(emulator["source"], "OUTP?") == "0" and ask(emulator["awg"], "OUTP1?") == "0"
    levels = [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]
    assert levels[-1] == 0.0 and max(levels) > 0
    assert_parked_within_rate(emulator, magnet, plateau)


def test_after_sigkill_at_0_3_T_the_next_open_ramps_from_the_present_current(tmp_path, emulator, station):
    magnet = load_station(station).magnet
    proc = spinlab_process(
        *acquire_args(station, tmp_path / "runs", duration_s=0.05), "--field-T", str(FIELD_T)
    )
    try:
        wait_for_steps(tmp_path / "runs", 1, proc, timeout_s=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # nothing switched anything off: the coil still carries its current
    assert ask(emulator["magnet"], "OUTP?") == "1"
    present = float(ask(emulator["magnet"], "MEAS:CURR?"))
    assert present == pytest.approx((FIELD_T - magnet.remanence_T) / magnet.T_per_A, abs=0.05)
    ask(emulator["magnet"], "DIAG:CURR:LOG:CLE;*OPC?")
    with open_bench(str(station)):
        opened = magnet_log(emulator)
    # the first set point the new run gave is one ramp step below the present current: no jump
    assert opened[0, 1] == pytest.approx(present - magnet.ramp_step_A, abs=magnet.ramp_step_A * 0.05)
    assert_parked_within_rate(emulator, magnet, opened[0, 1])
