"""ZeroMQ endpoint parsing shared by the publisher, the control server and the clients.

Servers bind to loopback unless the user names another host: ``5555`` and ``tcp://:5555`` mean
``tcp://127.0.0.1:5555``; port ``0`` or ``*`` asks the OS for a free port (read it back from the
object's ``endpoint``). Binding elsewhere works but is logged as a warning, because the event
stream is not encrypted (the control channel is: CURVE).
"""

from __future__ import annotations

import ipaddress
import logging
import re

from spinlab.errors import ConfigError

log = logging.getLogger("spinlab.monitoring")

_TCP_RE = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+|\*)$")


def bind_endpoint(address: str, what: str = "monitor") -> str:
    """Normalise a bind address; warn when it is not loopback."""
    address = (address or "").strip()
    if re.fullmatch(r"\d+", address):
        address = f"tcp://127.0.0.1:{address}"
    if address.startswith("ipc://"):
        return address
    m = _TCP_RE.match(address)
    if not m:
        raise ConfigError(
            f"{what} address {address!r} must look like tcp://127.0.0.1:5555 (or a bare port; "
            "port 0 picks a free one)"
        )
    host, port = m["host"], m["port"]
    port = "*" if port in ("*", "0") else port
    if port != "*" and not 0 < int(port) < 65536:
        raise ConfigError(f"{what} port {port} is out of range 1..65535")
    if host == "":
        host = "127.0.0.1"
    if not is_loopback(host):
        log.warning(
            "%s binds to %s: reachable from other machines (the event stream is not encrypted); "
            "use tcp://127.0.0.1:PORT unless you mean it",
            what,
            host,
        )
    return f"tcp://{host}:{port}"


def connect_endpoint(address: str, what: str = "monitor") -> str:
    """Normalise an address to connect to (``5555`` -> ``tcp://127.0.0.1:5555``)."""
    address = (address or "").strip()
    if re.fullmatch(r"\d+", address):
        return f"tcp://127.0.0.1:{address}"
    if address.startswith("ipc://"):
        return address
    m = _TCP_RE.match(address)
    if not m or m["port"] in ("*", "0") or m["host"] in ("", "*"):
        raise ConfigError(f"{what} address {address!r} must look like tcp://HOST:PORT")
    return address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
