"""Work that needs no device, done beside the device phase of a run.

A plan's baselines and reference fits do not need the device, so they need not wait for it: on
a bench the run thread mostly waits on the instruments, and a simulator leaves the second core
free. :class:`Beside` runs such work on a thread of its own. The run thread alone speaks for the
run: the work's progress waits in a mailbox that the run thread relays (after each device step,
and while it waits for the result), so a stop never waits for this thread before the outputs go
off. It is a daemon thread: a run that stops abandons it, and its next progress report ends it.

    with Beside(ctx, lambda phase: fit_baselines(..., progress=phase("baseline"))) as beside:
        states = measure(..., after_step=beside.relay)
        baselines = beside.result()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
#: ``phase(name)`` -> the progress callback ``(done, total)`` of the work's phase ``name``
Phase = Callable[[str], Callable[[int, int], None]]


class Abandoned(Exception):
    """Raised inside the work at its next progress report once the run no longer wants it."""


class Beside(Generic[T]):
    """``work(phase)`` on a daemon thread; :meth:`relay` its progress, :meth:`result` its value."""

    def __init__(self, ctx: Any, work: Callable[[Phase], T], poll_s: float = 1.0) -> None:
        self._ctx = ctx
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, int]] = {}
        self._abandoned = False
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="spinlab-beside", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[Phase], T]) -> None:
        try:
            self._value = work(self._phase)
        except BaseException as exc:  # handed to the run thread by result()
            self._error = exc
        finally:
            self._done.set()

    def _phase(self, stage: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            with self._lock:
                if self._abandoned:
                    raise Abandoned(f"the run no longer waits for {stage!r}")
                self._pending[stage] = (done, total)  # the latest of each phase is what a view shows

        return report

    def relay(self) -> None:
        """Send the work's progress since the last relay (run thread only)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for stage, (done, total) in pending.items():
            self._ctx.progress(done, total, stage=stage)

    def result(self) -> T:
        """The work's value once it is done, relaying its progress meanwhile; its error, raised."""
        while not self._done.wait(self._poll_s):
            self.relay()
        self.relay()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def __enter__(self) -> Beside[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._abandoned = True


__all__ = ["Abandoned", "Beside", "Phase"]
