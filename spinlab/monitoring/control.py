"""The control channel: status / pause / resume / abort over CURVE-authenticated ZeroMQ.

Server: a ROUTER socket with ``curve_server``; a :class:`zmq.auth.thread.ThreadAuthenticator`
admits only the public keys in ``KEYS/authorized_clients`` (layout: :mod:`.keys`). A background
thread answers requests at any time (also while the run is paused or inside a long step) and
only sets flags; the run thread obeys them in :meth:`ControlServer.service`, which
``Run.checkpoint()`` calls between steps. So pause/abort take effect at the next checkpoint,
the protocol unwinds through its ``with`` blocks (device closed: outputs off; run file flushed,
status ``aborted``) and the control thread never touches instruments or files.

Wire format (msgpack maps, never pickle), REQ/DEALER envelope ``[b"", body]``:

    request  {"v": 1, "command": "status"|"pause"|"resume"|"abort"}
    reply    {"v": 1, "ok": bool, "command": str, "state": str, "status": {...}, "error": str}

Unauthenticated peers never get past the CURVE handshake (they see no reply at all); failed
handshakes are counted from the socket monitor. Malformed, oversized (``MAXMSGSIZE``),
unknown or wrong-typed requests get an error reply and are counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgpack
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from spinlab.engine.engine import Control, RunState
from spinlab.errors import ConfigError, ControlError, MessageFormatError, RunAborted
from spinlab.monitoring import keys as keyfiles
from spinlab.monitoring.addresses import bind_endpoint, connect_endpoint
from spinlab.monitoring.messages import PROTOCOL_VERSION, check_plain

log = logging.getLogger("spinlab.monitoring.control")

COMMANDS = ("status", "pause", "resume", "abort")
MAX_REQUEST_BYTES = 4096

_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def parse_request(body: bytes) -> str:
    """The command of one request body (see module docstring); MessageFormatError if malformed."""
    if len(body) > MAX_REQUEST_BYTES:
        raise MessageFormatError(f"request of {len(body)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        request = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # garbage raises assorted msgpack/Unicode errors
        raise MessageFormatError(f"request is not a msgpack map ({type(exc).__name__})") from None
    if not isinstance(request, dict):
        raise MessageFormatError(f"request must be a map, got {type(request).__name__}")
    version = request.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise MessageFormatError(f"protocol version {version!r} not supported (need {PROTOCOL_VERSION})")
    command = request.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise MessageFormatError(f"unknown command {command!r}; use one of {list(COMMANDS)}")
    return command


def parse_reply(body: bytes, address: str) -> dict[str, Any]:
    """A reply map (see module docstring) with JSON-able contents; ControlError if malformed."""
    try:
        reply = msgpack.unpackb(body, raw=False)
        check_plain(reply, leaves=(type(None), bool, int, float, str))
    except Exception as exc:  # garbage raises assorted msgpack/Unicode errors
        raise ControlError(f"malformed reply from {address} ({type(exc).__name__})") from None
    status = reply.get("status", {}) if isinstance(reply, dict) else None
    if not (
        isinstance(reply, dict)
        and isinstance(reply.get("ok"), bool)
        and isinstance(status, dict)
        and isinstance(status.get("progress", {}), dict)
    ):
        raise ControlError(f"malformed reply from {address}: {reply!r}"[:200])
    return reply


class ControlServer(Control):
    """Serve the control channel of one run (see module docstring); the engine sees it as a
    :class:`~spinlab.engine.Control` (``service`` at every checkpoint, ``close`` at the end)."""

    def __init__(
        self, address: str, keys_dir: Any = None, run: RunState | None = None, *, poll_interval_s: float = 0.1
    ) -> None:
        public, secret, authorized = keyfiles.load_server_keys(keys_dir)
        self.run = run
        self._names = keyfiles.authorized_names(authorized)
        self._poll_ms = max(1, int(poll_interval_s * 1000))
        self._cond = threading.Condition()
        self._paused = False
        self._abort_by: str | None = None
        self._at_checkpoint = False
        self._stopping = False
        self.counts = {"requests": 0, "rejected": 0, "handshake_failures": 0}
        self._started = time.monotonic()

        endpoint = bind_endpoint(address, "control")
        self._ctx = zmq.Context()
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("spinlab.monitoring.auth"))
        self._sock = self._ctx.socket(zmq.ROUTER)
        try:
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(authorized))
            self._sock.curve_secretkey = secret
            self._sock.curve_publickey = public
            self._sock.curve_server = True
            self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            self._sock.setsockopt(zmq.LINGER, 100)
            self._sock.setsockopt(zmq.SNDHWM, 100)
            self._sock.bind(endpoint)
            self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._events = self._sock.get_monitor_socket(_HANDSHAKE_FAILURES)
        except zmq.ZMQError as exc:
            self._release()
            raise ConfigError(
                f"cannot serve the control channel on {endpoint}: {exc}; if the address is "
                "in use, pick another port (0 picks a free one)"
            ) from None
        self._thread = threading.Thread(target=self._serve, name="spinlab-control", daemon=True)
        self._thread.start()

    # --- run thread ------------------------------------------------------------------------
    def service(self) -> None:
        """Obey pending commands: block while paused, raise RunAborted after ``abort``."""
        if self._abort_by is None and not self._paused:
            return  # the common case costs two attribute reads
        with self._cond:
            if self._paused and self._abort_by is None:
                log.warning("run paused at a checkpoint; waiting for resume or abort")
                self._publish("control", {"state": "paused"})
            self._at_checkpoint = True
            try:
                while self._paused and self._abort_by is None:
                    self._cond.wait(0.5)  # a timeout keeps Ctrl-C responsive
            finally:
                self._at_checkpoint = False
            if self._abort_by is not None:
                raise RunAborted(f"aborted by remote control (client {self._abort_by})")
        log.warning("run resumed")

    @property
    def state(self) -> str:
        if self._abort_by is not None:
            return "aborting"
        if self._paused:
            return "paused" if self._at_checkpoint else "pausing"
        return "running"

    def close(self) -> None:
        """Stop answering and release the socket and authenticator."""
        if self._stopping:
            return
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        self._thread.join(5 * self._poll_ms / 1000 + 1.0)

    # --- control thread --------------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        try:
            while not self._stopping:
                ready = dict(poller.poll(self._poll_ms))
                if self._events in ready:
                    self._count_handshake_failures()
                if self._sock in ready:
                    self._handle_one()
        except Exception:
            log.exception("control channel failed; the run continues without remote control")
        finally:
            self._release()

    def _count_handshake_failures(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._events, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.counts["handshake_failures"] += 1
            log.warning(
                "control channel on %s refused a connection (CURVE handshake failed: "
                "unknown client key or wrong server key)",
                event.get("endpoint", b"?").decode(errors="replace"),
            )

    def _handle_one(self) -> None:
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        self.counts["requests"] += 1
        identity, rest = frames[0], frames[1:]
        envelope = []
        if len(rest) == 2 and len(rest[0]) == 0:
            envelope, rest = [b""], rest[1:]
        client = self._client_name(frames[-1])
        try:
            if len(rest) != 1:
                raise MessageFormatError(f"expected one body frame, got {len(rest)}")
            reply = self._execute(rest[0].bytes, client)
        except MessageFormatError as exc:
            self.counts["rejected"] += 1
            log.warning("rejected a control request from %s: %s", client, exc)
            reply = {
                "v": PROTOCOL_VERSION,
                "ok": False,
                "command": None,
                "state": self.state,
                "error": str(exc),
            }
        try:
            self._sock.send_multipart(
                [identity, *envelope, msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            log.warning("could not reply to control client %s: %s", client, exc)

    def _client_name(self, frame: zmq.Frame) -> str:
        try:
            user = frame.get("User-Id")
        except zmq.ZMQError:
            return "unknown"
        key = user.encode() if isinstance(user, str) else user
        return self._names.get(key, str(user))

    def _execute(self, body: bytes, client: str) -> dict[str, Any]:
        command = parse_request(body)
        if command != "status":
            self._apply(command, client)
        return {
            "v": PROTOCOL_VERSION,
            "ok": True,
            "command": command,
            "state": self.state,
            "status": self._status(),
        }

    def _apply(self, command: str, client: str) -> None:
        with self._cond:
            if command == "pause":
                self._paused = True
            elif command == "resume":
                self._paused = False
            elif command == "abort" and self._abort_by is None:
                self._abort_by = client
            self._cond.notify_all()
            # still holding the lock: the run thread's own notice ("paused") comes after this one
            self._publish("control", {"command": command, "client": client, "state": self.state})
        log.warning("control: %s requested by %s", command, client)

    def _status(self) -> dict[str, Any]:
        run = self.run
        status: dict[str, Any] = {
            "control": dict(self.counts),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }
        if run is not None:
            status.update(
                {
                    "run_id": getattr(run, "run_id", None),
                    "kind": getattr(run, "kind", None),
                    "run_status": getattr(run, "status", None),
                    "progress": dict(getattr(run, "last_progress", None) or {}),
                    "monitor_dropped": int(getattr(getattr(run, "events", None), "dropped", 0)),
                }
            )
        return status

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        publish = getattr(self.run, "publish", None)
        if publish is not None:
            publish(topic, payload)

    def _release(self) -> None:
        events = getattr(self, "_events", None)
        if events is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            events.close(0)
        self._sock.close(0)
        self._auth.stop()
        self._ctx.term()


class ControlClient:
    """One client of a run's control channel (``spinlab control`` uses it)."""

    def __init__(self, address: str, key_file: Any, server_key_file: Any, *, timeout_s: float = 5.0) -> None:
        self.address = connect_endpoint(address, "control")
        self.timeout_s = float(timeout_s)
        self._public, self._secret = keyfiles.load_client_keys(key_file)
        self._server_public = keyfiles.load_public_key(server_key_file)

    def request(self, command: str) -> dict[str, Any]:
        """Send one command and return the reply map; raise ControlError on no/error reply."""
        if command not in COMMANDS:
            raise ControlError(f"unknown command {command!r}; use one of {list(COMMANDS)}")
        no_reply = ControlError(
            f"no reply from {self.address} within {self.timeout_s:g} s: the run is not "
            "serving control there, or it refused your key (check --key and --server-key)"
        )
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        try:
            sock.curve_secretkey = self._secret
            sock.curve_publickey = self._public
            sock.curve_serverkey = self._server_public
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
            # a refused key can drop the connection before the send: with no peer a DEALER's
            # send would block for ever, so it gets the same deadline as the reply
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
            sock.connect(self.address)
            try:
                sock.send_multipart([b"", msgpack.packb({"v": PROTOCOL_VERSION, "command": command})])
            except zmq.Again:
                raise no_reply from None
            if not sock.poll(int(self.timeout_s * 1000)):
                raise no_reply
            frames = sock.recv_multipart()
        finally:
            sock.close(0)
            ctx.term()
        reply = parse_reply(frames[-1], self.address)
        if not reply["ok"]:
            raise ControlError(f"{command} refused: {reply.get('error')}")
        return reply
