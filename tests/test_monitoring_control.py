"""The CURVE-authenticated control channel over real loopback sockets, driving a sim:vortex run."""

import time

import h5py
import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth

import spinlab
from spinlab import Device, RunAborted
from spinlab.errors import ConfigError
from spinlab.monitoring import ControlClient, ControlError, ControlServer, create_keys
from spinlab.testing import BackgroundRun

ADDRESS = "tcp://127.0.0.1:0"


class OutputsOffRecorder(Device):
    """sim:vortex behind a stand-in for bench hardware whose close() turns the outputs off."""

    def __init__(self):
        super().__init__()
        self.inner = spinlab.open_device("sim:vortex?seed=2")
        self.limits = self.inner.limits
        self.default_conditions = dict(self.inner.default_conditions)
        self.outputs_on = True

    def _respond(self, drive, dt_s, conditions):
        assert self.outputs_on, "respond after close: outputs must stay off"
        return self.inner._respond(drive, dt_s, conditions)

    def outputs_off(self):
        self.outputs_on = False

    def close(self):
        self.outputs_off()
        self.inner.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    alice = create_keys(root, "alice")
    zmq.auth.create_certificates(root, "mallory")  # a valid key pair that is not authorised
    return {
        "dir": root,
        "alice": alice["client_secret"],
        "server": alice["server_public"],
        "mallory": root / "mallory.key_secret",
    }


def background_run(tmp_path, keys, device):
    """A looping acquisition in a worker thread with the control channel served."""
    bg = BackgroundRun(
        tmp_path,
        device,
        control=ControlServer(ADDRESS, keys_dir=keys["dir"]),
        on_step=lambda ctx, n: setattr(
            bg, "outputs_seen_on", getattr(bg, "outputs_seen_on", False) or _bias_on(ctx.device)
        ),
    )
    assert bg.ready.wait(10)
    return bg


def _bias_on(dev):
    lab = getattr(dev, "lab", None)
    return bool(lab is not None and lab.source.output_on)


def client(run, keys, who="alice", timeout_s=3.0, server=None):
    return ControlClient(run.endpoint, keys[who], server or keys["server"], timeout_s=timeout_s)


def test_authenticated_abort_stops_the_run_with_outputs_off_and_data_intact(tmp_path, keys):
    device = OutputsOffRecorder()
    bg = background_run(tmp_path, keys, device)
    assert bg.wait_steps(5)
    reply = client(bg, keys).request("abort")
    assert reply["ok"] and reply["state"] == "aborting"
    bg.thread.join(5)
    assert not bg.thread.is_alive()
    assert isinstance(bg.error, RunAborted) and "alice" in str(bg.error)
    assert device.outputs_on is False
    with h5py.File(f"{bg.path}/run.h5") as f:
        assert f.attrs["status"] == "aborted"
        # every completed step is in the file (the abort may land after a step, before its count)
        assert f["responses"].shape[1:] == (200,) and f["responses"].shape[0] in (
            bg.steps_done,
            bg.steps_done + 1,
        )
        assert len(f["engine/events"]) == f["responses"].shape[0]
        assert np.all(np.isfinite(f["responses"][()]))


def test_abort_of_an_emulated_bench_run_switches_the_instrument_outputs_off(tmp_path, keys):
    device = spinlab.open_device("bench:emulated")
    bg = background_run(tmp_path, keys, device)
    assert bg.wait_steps(3)
    assert bg.outputs_seen_on  # the bias source was on while acquiring
    assert client(bg, keys).request("abort")["ok"]
    bg.thread.join(10)
    assert isinstance(bg.error, RunAborted)
    assert not device.lab.source.output_on and not device.lab.awg.output_on
    with h5py.File(f"{bg.path}/run.h5") as f:
        assert f.attrs["status"] == "aborted" and f["responses"].shape[0] in (
            bg.steps_done,
            bg.steps_done + 1,
        )


def test_unauthenticated_and_wrong_key_aborts_are_refused_and_the_run_goes_on(tmp_path, keys):
    bg = background_run(tmp_path, keys, OutputsOffRecorder())
    try:
        assert bg.wait_steps(2)
        with pytest.raises(ControlError, match="no reply"):
            client(bg, keys, who="mallory", timeout_s=0.5).request("abort")
        with pytest.raises(ControlError, match="no reply"):  # right client key, wrong server key
            client(bg, keys, timeout_s=0.5, server=keys["dir"] / "mallory.key").request("abort")

        ctx = zmq.Context()  # a client without CURVE at all
        plain = ctx.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(bg.endpoint)
        plain.send_multipart([b"", msgpack.packb({"v": 1, "command": "abort"})])
        assert not plain.poll(500)
        plain.close(0)
        ctx.term()

        before = bg.steps_done
        assert bg.wait_steps(before + 5), "the run must keep going"
        status = client(bg, keys).request("status")
        assert status["state"] == "running" and bg.thread.is_alive()
        assert status["status"]["control"]["handshake_failures"] >= 2
        assert status["status"]["progress"]["done"] >= before
    finally:
        client(bg, keys).request("abort")
        bg.thread.join(5)


def test_pause_blocks_at_the_checkpoint_answers_status_and_resume_continues(tmp_path, keys):
    bg = background_run(tmp_path, keys, OutputsOffRecorder())
    alice = client(bg, keys)
    try:
        assert bg.wait_steps(2)
        assert alice.request("pause")["ok"]
        deadline = time.monotonic() + 5
        while alice.request("status")["state"] != "paused" and time.monotonic() < deadline:
            time.sleep(0.01)
        held = bg.steps_done
        time.sleep(0.2)
        status = alice.request("status")  # still answering while paused
        assert status["state"] == "paused" and bg.steps_done == held
        assert status["status"]["progress"]["done"] == held
        assert alice.request("resume")["state"] == "running"
        assert bg.wait_steps(held + 3)
        alice.request("pause")
        while alice.request("status")["state"] != "paused" and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        alice.request("abort")  # abort also releases a paused run
        bg.thread.join(5)
        assert isinstance(bg.error, RunAborted)
    finally:
        if bg.thread.is_alive():
            alice.request("abort")
            bg.thread.join(5)


def test_malformed_and_unknown_requests_get_errors_and_are_counted(tmp_path, keys):
    bg = background_run(tmp_path, keys, OutputsOffRecorder())
    public, secret = zmq.auth.load_certificate(keys["alice"])
    server_public = zmq.auth.load_certificate(keys["server"])[0]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(bg.endpoint)

    def ask(*frames):
        sock.send_multipart([b"", *frames])
        assert sock.poll(3000), "the server must answer even nonsense"
        return msgpack.unpackb(sock.recv_multipart()[-1])

    try:
        assert "unknown command" in ask(msgpack.packb({"v": 1, "command": "self-destruct"}))["error"]
        assert "not a msgpack map" in ask(b"\xc1\xc1\xc1")["error"]
        assert "must be a map" in ask(msgpack.packb([1, 2, 3]))["error"]
        assert "version" in ask(msgpack.packb({"v": 7, "command": "abort"}))["error"]
        assert "unknown command" in ask(msgpack.packb({"v": 1, "command": 42}))["error"]
        assert "one body frame" in ask(b"a", b"b")["error"]
        sock.send_multipart([b"", b"x" * 100_000])  # over MAXMSGSIZE: the server drops the peer
        time.sleep(0.2)
        status = client(bg, keys).request("status")
        assert status["state"] == "running" and bg.thread.is_alive()
        assert status["status"]["control"]["rejected"] == 6
    finally:
        sock.close(0)
        ctx.term()
        client(bg, keys).request("abort")
        bg.thread.join(5)


def test_control_refuses_to_start_without_keys(tmp_path):
    with pytest.raises(ConfigError, match="spinlab keys"):
        ControlServer(ADDRESS, keys_dir=None)
    with pytest.raises(ConfigError, match="cannot read the server secret key"):
        ControlServer(ADDRESS, keys_dir=tmp_path / "nowhere")


def test_key_layout_and_name_validation(tmp_path):
    paths = create_keys(tmp_path, "bob")
    assert paths["client_public"] == tmp_path / "authorized_clients" / "bob.key"
    assert paths["client_secret"] == tmp_path / "clients" / "bob.key_secret"
    assert (paths["client_secret"].stat().st_mode & 0o777) == 0o600
    assert (paths["server_secret"].stat().st_mode & 0o777) == 0o600
    create_keys(tmp_path, "carol")  # the server pair is kept, not replaced
    assert (
        zmq.auth.load_certificate(paths["server_public"])[0]
        == zmq.auth.load_certificate(paths["server_secret"])[0]
    )
    with pytest.raises(ConfigError, match="already exists"):
        create_keys(tmp_path, "bob")
    with pytest.raises(ConfigError, match="client name"):
        create_keys(tmp_path, "../evil")
