"""Raw-socket SCPI servers (the port-5025 "SOCKET" interface of LAN instruments).

Any VISA client reaches the emulated lab as ``TCPIP::HOST::PORT::SOCKET``: commands are
newline-terminated, binary blocks travel inline, replies end with a newline. One thread and
one :class:`~.scpi.Session` (input buffer and output queue) per connection, so clients cannot
block or garble each other; replies completed later (``*OPC?`` after an acquisition triggered
from another connection) are pushed as soon as they are queued. A dropped connection (an
injected fault) is closed with a TCP reset, as a power-cycled instrument does.

Each instrument serves at most :data:`MAX_CONNECTIONS` clients at once (a LAN instrument has a
few socket slots too): one more is accepted and closed at once, with one warning, so a flood of
connections cannot pile up threads and buffers. With the per-message caps of :mod:`.scpi`, the
memory one instrument can be made to hold is bounded.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import struct
import threading
from typing import TYPE_CHECKING

from spinlab.sim_backends.emulated.scpi import ScpiInstrument, Session

if TYPE_CHECKING:  # pragma: no cover
    from spinlab.sim_backends.emulated.lab import EmulatedLab

_RECV_BYTES = 1 << 20
_POLL_S = 0.02
#: clients one emulated instrument serves at once
MAX_CONNECTIONS = 8

log = logging.getLogger(__name__)


class _ScpiHandler(socketserver.BaseRequestHandler):
    server: _ScpiServer

    def handle(self) -> None:
        session = self.server.instrument.open_session()
        try:
            self._serve(self.request, session)
        finally:
            session.close()  # its half-sent message and unread replies go with it

    def _serve(self, sock: socket.socket, session: Session) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], _POLL_S)
            if readable:
                try:
                    data = sock.recv(_RECV_BYTES)
                except OSError:
                    return
                if not data:
                    return
                session.write(data)
            if not session.alive:  # dropped: reset the connection (RST) instead of closing it politely
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                return
            reply = session.read()
            if reply:
                try:
                    sock.sendall(reply)
                except OSError:
                    return


class _ScpiServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], instrument: ScpiInstrument) -> None:
        self.instrument = instrument
        self.stopping = threading.Event()
        self.connections = 0
        self._count = threading.Lock()
        self._refusing = False
        super().__init__(address, _ScpiHandler)

    def verify_request(self, request, client_address) -> bool:
        """Take a connection slot; refused (closed by socketserver) when all are taken."""
        with self._count:
            if self.connections < MAX_CONNECTIONS:
                self.connections += 1
                self._refusing = False
                return True
            warn, self._refusing = not self._refusing, True
        if warn:
            log.warning(
                "%s: %d clients already connected (the most it serves); refusing %s:%s until one closes",
                self.instrument.IDN.split(",")[1],
                MAX_CONNECTIONS,
                *client_address[:2],
            )
        return False

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: give the slot back
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count:
            self.connections -= 1


class EmulatedTcpServers:
    """The three servers of one lab; ``resources`` maps role -> VISA resource string."""

    def __init__(self, lab: EmulatedLab, host: str, ports: dict[str, int]) -> None:
        self.lab = lab
        self.host = host
        instruments = lab.roles
        self._servers: dict[str, _ScpiServer] = {}
        self._threads: list[threading.Thread] = []
        try:
            for role, port in ports.items():
                self._servers[role] = _ScpiServer((host, int(port)), instruments[role])
        except OSError:
            for server in self._servers.values():
                server.server_close()
            raise
        for role, server in self._servers.items():
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"scpi-{role}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    @property
    def ports(self) -> dict[str, int]:
        return {role: server.server_address[1] for role, server in self._servers.items()}

    @property
    def resources(self) -> dict[str, str]:
        return {role: f"TCPIP::{self.host}::{port}::SOCKET" for role, port in self.ports.items()}

    def close(self) -> None:
        """Stop accepting, end connection threads, release the ports."""
        for server in self._servers.values():
            server.stopping.set()
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._servers.clear()
        self._threads.clear()
        if self in self.lab.servers:
            self.lab.servers.remove(self)

    def __enter__(self) -> EmulatedTcpServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_tcp(
    lab: EmulatedLab,
    host: str = "127.0.0.1",
    awg_port: int = 5025,
    scope_port: int = 5026,
    source_port: int = 5027,
    **ports: int,
) -> EmulatedTcpServers:
    """Start raw-socket SCPI servers for the lab's AWG, scope and DC source (port 0 picks a
    free port), and for its other roles given in ``ports`` (role -> port; a role not given gets
    a free port). Returns the running servers; call ``close()`` (or use ``with``) to stop them."""
    ports = {"awg": awg_port, "scope": scope_port, "source": source_port, **ports}
    ports.update({role: 0 for role in lab.roles if role not in ports})  # the rest on free ports
    servers = EmulatedTcpServers(lab, host, ports)
    lab.servers.append(servers)
    return servers
