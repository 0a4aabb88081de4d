"""The same drivers, unchanged, against the emulated lab served over raw SCPI sockets and reached
through pyvisa-py (``@py``); and the ``spinlab emulate`` command."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.keithley import Keithley2400
from pyvisa import constants
from tcp_helpers import write_station

from spinlab import Device, SafetyLimits
from spinlab.instruments.bench import open_bench
from spinlab.instruments.keysight_awg import Keysight33500B
from spinlab.instruments.keysight_scope import InfiniiVisionScope
from spinlab.registry import open_device
from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

ROOT = Path(__file__).resolve().parents[1]
NODELAY = constants.ResourceAttribute.tcpip_nodelay
ROLES = ("awg", "scope", "source", "magnet", "gaussmeter", "analyser")


class LinearDevice(Device):
    def __init__(self):
        super().__init__(SafetyLimits(max_drive_V=0.5, max_bias_A=10e-3))

    def _respond(self, drive, dt_s, conditions):
        return 0.5 * drive + 10.0 * conditions.get("bias_A", np.zeros(drive.shape[0]))[:, None]


@pytest.fixture
def served():
    lab = EmulatedLab(LinearDevice(), seed=5, trigger_delay_s=0.0, scope_noise_V=1e-3)
    servers = serve_tcp(lab, "127.0.0.1", awg_port=0, scope_port=0, source_port=0)
    opened = []

    def connect(cls, role, **kwargs):
        adapter = VISAAdapter(
            servers.resources[role],
            visa_library="@py",
            timeout=2000,
            read_termination="\n",
            write_termination="\n",
        )
        opened.append(adapter)
        return cls(adapter, **kwargs)

    yield lab, servers, connect
    for adapter in opened:
        adapter.close()
    servers.close()


def test_drive_capture_round_trip_over_sockets(served):
    lab, servers, connect = served
    awg = connect(Keysight33500B, "awg")
    scope = connect(InfiniiVisionScope, "scope")
    smu = connect(Keithley2400, "source")
    smu.source_mode = "current"
    smu.compliance_voltage = 2.0
    smu.source_current = 4e-3
    smu.enable_source()
    rng = np.random.default_rng(1)
    x = np.repeat(rng.uniform(-0.3, 0.3, 2000), 10)
    x[0] = 0.0
    x[::97] = 0.0  # bytes 0x0A and 0x0D inside the block are fine: it is length-delimited
    awg.upload_arb("drive", x, 10e6)
    awg.output_enabled = True
    awg.arm_burst(1, "BUS")
    scope.configure_capture(1, x.size / 10e6, 10e6, 0.8, offset_V=0.04)
    scope.arm_single()
    awg.trigger()
    scope.wait_acquired(5.0)
    wave = scope.read_waveform(1)
    err = wave.samples - (0.5 * x + 10.0 * 4e-3)
    assert wave.n == x.size and abs(err.mean()) < 3e-4
    assert np.max(np.abs(err)) < 0.8 / 512 + 6e-3
    assert awg.check_errors() == [] and scope.check_errors() == []
    awg.shutdown()
    assert lab.awg.output_on is False


def test_malformed_scpi_over_a_socket_is_queued(served):
    lab, servers, connect = served
    port = servers.ports["awg"]
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"THIS IS:NOT SCPI\nDATA:ARB:DAC x,#9zz\n*IDN?\n")
        reply = _read_line(sock)
        assert reply.startswith(b"Agilent Technologies,33522B")
        sock.sendall(b"SYST:ERR?\n")
        assert _read_line(sock).startswith(b'-113,"Undefined header')
        sock.sendall(b"SYST:ERR?\n")
        assert _read_line(sock).startswith(b"-1")  # the malformed block
        sock.sendall(b"SYST:ERR?\n")
        assert _read_line(sock) == b'+0,"No error"\n'


def test_servers_release_their_ports(served):
    lab, servers, connect = served
    ports = servers.ports
    servers.close()
    for port in ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def _read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return data


def test_spinlab_emulate_prints_resources_and_stops_on_ctrl_c():
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
            "--magnet-port",
            "0",
            "--gaussmeter-port",
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
        lines = [proc.stdout.readline() for _ in range(5)]
        resources = dict(line.split() for line in lines)
        assert set(resources) == {"awg", "scope", "source", "magnet", "gaussmeter"}
        assert all(r.startswith("TCPIP::127.0.0.1::") and r.endswith("::SOCKET") for r in resources.values())
        awg = Keysight33500B(
            VISAAdapter(
                resources["awg"],
                visa_library="@py",
                timeout=2000,
                read_termination="\n",
                write_termination="\n",
            )
        )
        assert "33522B" in awg.id
        awg.adapter.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the command prints its threads' stacks
            time.sleep(1)
            proc.kill()
            pytest.fail(f"spinlab emulate did not stop on Ctrl-C:\n{proc.communicate()[1]}")
        assert proc.returncode == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_spinlab_emulate_as_a_script_s_background_job_stops_on_a_signal(signum):
    """A script's `spinlab emulate &` starts with SIGINT ignored (POSIX shells do that to
    background jobs): `kill -INT` and `kill -TERM` still stop it, its ports closed."""
    ports = [arg for role in ROLES for arg in (f"--{role}-port", "0")]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from spinlab.cli import main; main()", "emulate", "--json", *ports],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        resources = json.loads(proc.stdout.readline())["resources"]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "emulated instruments stopped" in err, err
        _, host, port, _ = resources["awg"].split("::")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_half_sent_block_does_not_poison_the_next_client(served):
    lab, servers, connect = served
    port = servers.ports["awg"]
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"DATA:ARB:DAC cut,#3100" + b"\x01" * 40)  # disconnects mid-block
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"*IDN?\n")
        assert _read_line(sock).startswith(b"Agilent Technologies")
    assert lab.awg.arbs == {}


def test_a_station_over_pyvisa_py_sends_each_command_at_once(tmp_path):
    """Every link of a station reached through pyvisa-py has Nagle's algorithm off (the VISA
    default NI-VISA keeps): with it on, a command written after another waits up to 40 ms for
    the instrument's acknowledgement, which made a record over TCP 2.5 times slower."""
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=1)
    with serve_tcp(lab, "127.0.0.1", 0, 0, 0) as servers:
        bench = open_bench(str(write_station(tmp_path, servers.resources)))
        try:
            assert set(bench.links) >= {"awg", "scope", "source", "magnet", "gaussmeter", "analyser"}
            for link in bench.links.values():
                connection = link.driver.adapter.connection
                assert connection.get_visa_attribute(NODELAY) == constants.VI_TRUE, link.role
        finally:
            bench.close()
