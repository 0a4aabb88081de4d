"""A recorded dialogue served on TCP: each recorded instrument answers on a raw socket port.

Why, beside the in-process :class:`~spinlab.instruments.transcript.ReplayVisaLibrary`: a driver
that is not spinlab's (another project's, through any VISA library or a bare socket) replays a
transcript too, as it reaches the emulated instruments (``TCPIP::HOST::PORT::SOCKET``). Each
message the client sends must be the next one recorded for that instrument; the recorded
replies that followed it are sent back. The first message the recording does not have closes
the connection, and is kept in :attr:`ReplayServers.failures` (and logged) to say what differed.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import threading
from collections import deque
from pathlib import Path
from typing import Any

from spinlab.instruments.transcript import read_transcript, transcript_file

log = logging.getLogger(__name__)
_POLL_S = 0.02


class _ReplayHandler(socketserver.BaseRequestHandler):
    server: _ReplayServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = b""
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], _POLL_S)
            if not readable:
                continue
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            received += data
            received, replies, failure = self.server.answer(received)
            if replies:
                sock.sendall(replies)
            if failure:
                self.server.fail(failure)
                return


class _ReplayServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], resource: str, rows: list[dict[str, Any]], name: str
    ) -> None:
        self.resource, self.name = resource, name
        self.rows = deque(row for row in rows if row["direction"] in ("write", "read") and "error" not in row)
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        super().__init__(address, _ReplayHandler)

    def answer(self, received: bytes) -> tuple[bytes, bytes, str]:
        """Consume the recorded messages ``received`` completes; returns what is left of it, the
        replies to send and, when it strays from the recording, why."""
        replies = b""
        with self.lock:
            while received:
                if not self.rows or self.rows[0]["direction"] != "write":
                    return received, replies, f"got {received[:80]!r} after the recorded messages"
                expected = self.rows[0]["bytes"]
                if not (expected.startswith(received) or received.startswith(expected)):
                    return (
                        received,
                        replies,
                        f"got {received[:80]!r}, but the recording has {expected[:80]!r}",
                    )
                if len(received) < len(expected):
                    break  # the rest of the message is on its way
                received = received[len(expected) :]
                self.rows.popleft()
                while self.rows and self.rows[0]["direction"] == "read":
                    replies += self.rows.popleft()["bytes"]
        return received, replies, ""

    def fail(self, why: str) -> None:
        message = f"replay of {self.name}: {self.resource} {why}"
        self.failures.append(message)
        log.error("%s", message)


class ReplayServers:
    """One server per instrument of a transcript; ``resources``: role -> VISA resource."""

    def __init__(
        self, path: str | Path, host: str = "127.0.0.1", ports: dict[str, int] | None = None
    ) -> None:
        path = transcript_file(path)
        header, rows = read_transcript(path)
        self.host = host
        self._servers: dict[str, _ReplayServer] = {}
        self._started = False
        try:
            for resource, role in header.get("resources", {}).items():
                mine = [row for row in rows if row["resource"] == resource]
                port = (ports or {}).get(role, 0)
                self._servers[role] = _ReplayServer((host, port), resource, mine, path.name)
        except BaseException:
            self.close()
            raise
        for server in self._servers.values():
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._started = True

    @property
    def resources(self) -> dict[str, str]:
        return {
            role: f"TCPIP::{self.host}::{s.server_address[1]}::SOCKET" for role, s in self._servers.items()
        }

    @property
    def failures(self) -> list[str]:
        """Every departure from the recording so far."""
        return [failure for server in self._servers.values() for failure in server.failures]

    def remaining(self) -> dict[str, int]:
        """Recorded messages and replies not replayed yet, by role."""
        return {role: len(s.rows) for role, s in self._servers.items() if s.rows}

    def close(self) -> None:
        for server in self._servers.values():
            server.stopping.set()
            if self._started:
                server.shutdown()
            server.server_close()

    def __enter__(self) -> ReplayServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ReplayServers"]
