"""Signals during a run: SIGINT (Ctrl-C), SIGTERM (``timeout``, systemd, batch schedulers) and
SIGHUP (a dropped SSH session) all stop a run the same safe way.

While a run executes, a signal raises :class:`~spinlab.errors.RunInterrupted` in the main
thread at once, so a long step stops promptly and the engine's cleanup ramps the bias down and
switches the AWG off. Two stretches are shielded:

* ``deferred()``: committing a step to disk and opening the instruments; a signal arriving
  there is raised as soon as the stretch ends, so no write is ever torn by a signal;
* ``shielded()``: the cleanup itself (outputs off, closing the run file); signals arriving
  there are only noted, so a second Ctrl-C or a repeated SIGTERM cannot cut a bias ramp short.

SIGKILL cannot be caught: outputs then stay as they were (the next ``open`` of the station
ramps a source that was left on down from where it is), and the journal keeps every completed
step. Handlers are installed only in the main thread (Python delivers signals there).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from spinlab.errors import RunInterrupted

log = logging.getLogger("spinlab.engine")

HANDLED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                            getattr(signal, "SIGHUP", None)) if s is not None)


class SignalGuard:
    """Context manager installing the run's signal handlers (restored on exit)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.received: list[int] = []
        self._defer = 0
        self._shield = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def active(self) -> bool:
        return bool(self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self._shield:
            log.warning("%s received while outputs are going off; finishing that first",
                        signal.Signals(signum).name)
            self.pending = self.pending or signum
            return
        if self._defer:
            self.pending = self.pending or signum
            return
        raise RunInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals during a write; raise the first one when the write is done."""
        self._defer += 1
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self._defer -= 1
            if not failed and not self._defer and not self._shield:
                self.raise_pending()

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Only note signals (cleanup must run to its end)."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1

    def raise_pending(self) -> None:
        if self.pending is not None and not self._shield:
            signum, self.pending = self.pending, None
            raise RunInterrupted(signum)


__all__ = ["SignalGuard", "HANDLED"]
