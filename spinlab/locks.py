"""Exclusive use of instruments: one OS file lock per VISA resource string.

Why: two processes talking to one AWG interleave their commands and steal each other's replies,
and nothing in either run file would show it. A station's instruments are locked for as long
as a process holds them open; a second process is refused at once, with a message naming the
holder (PID, command line and run). The OS releases the lock when the holder dies, SIGKILL
included, so a crashed run never leaves a station locked.

Scope: the locks live in one directory of this machine (``SPINLAB_LOCK_DIR``, default
``<tmp>/spinlab-locks``), so they serialise every process on this computer. Two computers that
reach the same LAN instrument are not covered: that needs the instrument's own VISA lock.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def _key(resource: str) -> str:
    return hashlib.sha1(resource.strip().upper().encode()).hexdigest()[:20]


def holder_info() -> dict[str, Any]:
    """Who we are, for a refused second process to read."""
    return {"pid": os.getpid(), "run": CURRENT_RUN.get(), "argv": sys.argv[:6],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


class ResourceLocks:
    """Locks on a set of resource strings, all or none. Use as a context manager or call
    :meth:`release`. ``describe`` is what a refused caller is told about the holder."""

    def __init__(self, resources: Iterable[str], *, what: str = "station") -> None:
        self.resources = sorted({r for r in resources if r})
        self.what = what
        self._held: list[tuple[FileLock, Path]] = []
        directory = lock_dir()
        try:
            for resource in self.resources:  # sorted: two processes never deadlock
                base = directory / _key(resource)
                lock = FileLock(str(base) + ".lock", timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    raise StationBusyError(
                        f"{what} instrument {resource} is in use by {describe(base)}; wait for "
                        "that run to end or stop it (spinlab control ... abort), then retry"
                    ) from None
                self._held.append((lock, base))
                self.annotate()
        except BaseException:
            self.release()
            raise

    def annotate(self, **extra: Any) -> None:
        """(Re)write the holder record, e.g. once the run id is known."""
        info = {**holder_info(), **extra}
        for _, base in self._held:
            with contextlib.suppress(OSError):
                tmp = base.with_suffix(".owner.tmp")
                tmp.write_text(json.dumps(info))
                os.replace(tmp, base.with_suffix(".owner.json"))

    def release(self) -> None:
        while self._held:
            lock, base = self._held.pop()
            with contextlib.suppress(OSError):
                base.with_suffix(".owner.json").unlink()
            lock.release()

    def __enter__(self) -> "ResourceLocks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(base: Path) -> str:
    try:
        info = json.loads(base.with_suffix(".owner.json").read_text())
    except (OSError, ValueError):
        return "another process (no holder record)"
    run = f", run {info['run']}" if info.get("run") else ""
    argv = " ".join(str(a) for a in info.get("argv") or [])
    return f"PID {info.get('pid')}{run} ({argv}, since {info.get('since')})"


@contextlib.contextmanager
def current_run(run_id: str) -> Iterator[None]:
    """Name ``run_id`` in the holder records of locks taken inside this block."""
    token = CURRENT_RUN.set(run_id)
    try:
        yield
    finally:
        CURRENT_RUN.reset(token)


__all__ = ["ResourceLocks", "CURRENT_RUN", "current_run", "holder_info", "lock_dir"]
