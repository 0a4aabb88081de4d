"""Exclusive use of instruments: one OS file lock per VISA resource string.

Why: two processes talking to one AWG interleave their commands and steal each other's replies,
and nothing in either run file would show it. A station's instruments are locked for as long
as a process holds them open; a second process is refused at once, with a message naming the
holder (PID, command line and run). The OS releases the lock when the holder dies, SIGKILL
included, so a crashed run never leaves a station locked.

One instrument, one lock, however it is spelled: the lock is taken on the resource string's
canonical form (:func:`canonical`), by pyvisa's own parser of the VISA grammar: the interface
type and resource class in any case, the board number defaulting to 0 and the resource class to
``INSTR`` (``TCPIP::h::5025::SOCKET`` is ``TCPIP0::h::5025::SOCKET``, ``GPIB::24`` is
``GPIB0::24::INSTR``), numbers compared as numbers (``0x0957`` is ``2391``), host names
resolved to their address (``localhost`` is ``127.0.0.1``; a name that does not resolve is
compared lower-cased), serial device paths followed through links. A ``SOCKET`` and an
``INSTR`` (VXI-11, HiSLIP) session to one box stay two resources, as VISA counts them. Where two
spellings might or might not be one instrument the rule merges them: a needless refusal is safe,
two runs on one instrument are not.

Scope: the locks live in one directory of this machine (``SPINLAB_LOCK_DIR``, default
``<tmp>/spinlab-locks``), so they serialise the spinlab processes on this computer, and only
them. Two computers that reach the same LAN instrument are not covered, nor is any other client
(a script, a VISA tool, a raw TCP connection to the instrument's port): keeping those out is the
job of the instrument's own VISA/network lock or of a firewall. A run whose instrument is
disturbed that way sees it through the instrument's replies and error queue, and fails in one
line with its outputs off.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from spinlab.errors import StationBusyError

#: The run this context works for (set by the run engine); named in the holder record.
CURRENT_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("spinlab_run", default=None)


def lock_dir() -> Path:
    path = Path(os.environ.get("SPINLAB_LOCK_DIR") or Path(tempfile.gettempdir()) / "spinlab-locks")
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # shared by every user of the machine
        os.chmod(path, 0o1777)
    return path


#: VISA resource classes, which a resource string may spell in any case.
_CLASSES = {"INSTR", "SOCKET", "INTFC", "BACKPLANE", "MEMACC", "SERVANT", "RAW"}


def canonical(resource: str) -> str:
    """The one spelling of ``resource`` that every spelling of the same instrument shares (see
    the module docstring). A string pyvisa cannot parse (an emulator's own name) is compared
    stripped and upper-cased."""
    from pyvisa import rname

    text = resource.strip()
    parts = text.split("::")
    if parts[-1].upper() in _CLASSES:
        parts[-1] = parts[-1].upper()
    try:
        parsed = rname.parse_resource_name("::".join(parts))
    except (rname.InvalidResourceName, ValueError):
        return text.upper()
    fields = {f.name: _field(f.name, getattr(parsed, f.name)) for f in dataclasses.fields(parsed)}
    return str(dataclasses.replace(parsed, **fields))


def _field(name: str, value: str | None) -> str | None:
    if not value:
        return value
    if name == "host_address":
        return _address(value)
    if value.startswith("/"):  # a serial device path (ASRL/dev/ttyUSB0): case matters, links do not
        return os.path.realpath(value)
    try:
        return str(int(value, 16) if value.lower().startswith("0x") else int(value))
    except ValueError:
        return value.upper()


@functools.lru_cache(maxsize=64)
def _address(host: str) -> str:
    """A host's address (the least IPv4 one, else the least IPv6 one: one answer for every
    spelling); the lower-cased name when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return host.lower()
    v4 = sorted(i[4][0] for i in infos if i[0] == socket.AF_INET)
    v6 = sorted(i[4][0] for i in infos if i[0] == socket.AF_INET6)
    return (v4 or v6 or [host.lower()])[0]


def _key(resource: str) -> str:
    return hashlib.sha1(canonical(resource).encode()).hexdigest()[:20]


def holder_info() -> dict[str, Any]:
    """Who we are, for a refused second process to read."""
    return {
        "pid": os.getpid(),
        "run": CURRENT_RUN.get(),
        "argv": sys.argv[:6],
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class ResourceLocks:
    """Locks on a set of resource strings, all or none. Use as a context manager or call
    :meth:`release`. ``describe`` is what a refused caller is told about the holder."""

    def __init__(self, resources: Iterable[str], *, what: str = "station") -> None:
        # one lock per instrument, taken in the order of the keys: any two processes, whatever
        # their spellings, agree on it and never deadlock
        by_key = {_key(r): r for r in sorted({r for r in resources if r}, reverse=True)}
        self.resources = [by_key[k] for k in sorted(by_key)]
        self.what = what
        self._held: list[tuple[FileLock, Path, str]] = []
        directory = lock_dir()
        try:
            for resource in self.resources:
                base = directory / _key(resource)
                lock = FileLock(str(base) + ".lock", timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    raise StationBusyError(
                        f"{what} instrument {resource} is in use by {describe(base, resource)}; wait "
                        "for that run to end or stop it (spinlab control ... abort), then retry"
                    ) from None
                self._held.append((lock, base, resource))
                self.annotate()
        except BaseException:
            self.release()
            raise

    def annotate(self, **extra: Any) -> None:
        """(Re)write the holder record, e.g. once the run id is known."""
        info = {**holder_info(), **extra}
        for _, base, resource in self._held:
            with contextlib.suppress(OSError):
                tmp = base.with_suffix(".owner.tmp")
                tmp.write_text(json.dumps({**info, "resource": resource}))
                os.replace(tmp, base.with_suffix(".owner.json"))

    def release(self) -> None:
        while self._held:
            lock, base, _ = self._held.pop()
            with contextlib.suppress(OSError):
                base.with_suffix(".owner.json").unlink()
            lock.release()

    def __enter__(self) -> ResourceLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(base: Path, resource: str = "") -> str:
    """The holder of the lock at ``base``, and its spelling of the resource where it differs."""
    try:
        info = json.loads(base.with_suffix(".owner.json").read_text())
    except (OSError, ValueError):
        return "another process (no holder record)"
    run = f", run {info['run']}" if info.get("run") else ""
    argv = " ".join(str(a) for a in info.get("argv") or [])
    theirs = info.get("resource")
    alias = f", which opened it as {theirs}" if theirs and theirs != resource else ""
    return f"PID {info.get('pid')}{run} ({argv}, since {info.get('since')}{alias})"


@contextlib.contextmanager
def current_run(run_id: str) -> Iterator[None]:
    """Name ``run_id`` in the holder records of locks taken inside this block."""
    token = CURRENT_RUN.set(run_id)
    try:
        yield
    finally:
        CURRENT_RUN.reset(token)


__all__ = ["ResourceLocks", "CURRENT_RUN", "canonical", "current_run", "holder_info", "lock_dir"]
