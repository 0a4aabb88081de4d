"""Signals during a run: SIGINT (Ctrl-C), SIGTERM (``timeout``, systemd, batch schedulers) and
SIGHUP (a dropped SSH session) all stop a run the same safe way.

While a run executes, a signal raises :class:`~spinlab.errors.RunInterrupted` in the main
thread at once, so a long step stops promptly and the engine's cleanup ramps the bias down and
switches the AWG off. Two stretches are shielded:

* ``deferred()``: committing a step to disk and opening the instruments; a signal arriving
  there is raised as soon as the stretch ends, so no write is ever torn by a signal;
* ``shielded()``: the cleanup itself (outputs off, closing the run file); signals arriving
  there are only noted, so a second Ctrl-C or a repeated SIGTERM cannot cut a bias ramp short.

Both concern the guard's own thread only: a signal is raised in the main thread, so it can tear
no other thread's write, and another thread's cleanup cannot be cut by it.

Worker threads (an acquisition feeding a trainer) are not interrupted by signals; they are
*stopped*: the run (or the plan) binds a stop event to the thread with :func:`stops_with`, and
everything that drives instruments calls :func:`check_stop` before each record, which raises
:class:`~spinlab.errors.RunStopping` once any bound event is set. The engine sets the run's
event, waits for its workers and only then switches the outputs off.

SIGKILL cannot be caught: outputs then stay as they were (the next ``open`` of the station
ramps a source that was left on down from where it is), and the journal keeps every completed
step. Handlers are installed only in the main thread (Python delivers signals there).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from spinlab.errors import RunInterrupted, RunStopping

log = logging.getLogger("spinlab.engine")

HANDLED = tuple(
    s
    for s in (
        getattr(signal, "SIGINT", None),
        getattr(signal, "SIGTERM", None),
        getattr(signal, "SIGHUP", None),
    )
    if s is not None
)


class SignalGuard:
    """Context manager installing the run's signal handlers (restored on exit)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.received: list[int] = []
        self._defer = 0
        self._shield = 0
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler or a constant
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SignalGuard:
        self._thread = threading.current_thread()
        if self._thread is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
            _guards.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            _guards.remove(self)
        self._previous.clear()

    def _own(self) -> bool:
        """True in the thread that entered the guard (where its signals are raised)."""
        return threading.current_thread() is self._thread

    @property
    def active(self) -> bool:
        return bool(self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        # pending even when raised: code that swallows the exception (``except Exception``)
        # cannot lose the signal, the next checkpoint raises it again
        self.pending = self.pending or signum
        if self._shield:
            log.warning(
                "%s received while the run stops safely (outputs going off); finishing that first",
                signal.Signals(signum).name,
            )
            return
        if self._defer:
            return
        raise RunInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals during a write; raise the first one when the write is done."""
        if not self._own():
            yield
            return
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
        if not self._own():
            yield
            return
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1

    def wins_over(self, exc: BaseException) -> RunInterrupted | None:
        """What to report instead of ``exc`` once a signal arrived: the interruption (a library
        may wrap the RunInterrupted raised inside it, as torch's ``load_state_dict`` does, and a
        signal held while an instrument did not answer meets the failed open)."""
        if not self.received or isinstance(exc, RunInterrupted):
            return None
        interrupted = RunInterrupted(self.received[0])
        interrupted.__cause__ = exc
        return interrupted

    def raise_pending(self) -> None:
        if self.pending is not None and not self._shield and self._own():
            signum, self.pending = self.pending, None
            raise RunInterrupted(signum)


#: the guards whose handlers are installed, innermost last
_guards: list[SignalGuard] = []


def shield() -> contextlib.AbstractContextManager[None]:
    """Shield a cleanup (outputs off, waiting for a worker) from the running run's signals, for
    code that does not hold the guard (the bench, a trainer); nothing outside a run."""
    return _guards[-1].shielded() if _guards else contextlib.nullcontext()


class _Stops(threading.local):
    events: tuple[threading.Event, ...] = ()


_stops = _Stops()


@contextlib.contextmanager
def stops_with(event: threading.Event) -> Iterator[None]:
    """Work done in this thread inside the block stops at its next record once ``event`` is set."""
    outer = _stops.events
    _stops.events = (*outer, event)
    try:
        yield
    finally:
        _stops.events = outer


def check_stop() -> None:
    """Raise :class:`~spinlab.errors.RunStopping` if this thread was asked to stop (called by
    whatever drives instruments, before each record)."""
    if any(event.is_set() for event in _stops.events):
        raise RunStopping("this thread was asked to stop before its next record")


__all__ = ["SignalGuard", "HANDLED", "shield", "stops_with", "check_stop"]
