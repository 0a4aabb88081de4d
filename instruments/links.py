"""One instrument of a station as the bench holds it: its driver, and how to get it back.

A :class:`Link` knows how to (re)open its instrument, and :meth:`Link.step` turns whatever an
instrument fault looks like from Python - a reply that fails our checks (InstrumentError), a
VISA error (timeout, lost connection), a socket error (reset, broken pipe) - into one
:class:`StepFailed` that names the instrument and the step. The bench decides what to do with
it (retry, reconnect, give up); nothing here retries.

A link is safe to share between threads: one lock serialises its steps, reconnections and
closing, so two threads never interleave SCPI on one instrument. A closed link refuses every
use, and is never reopened, so nothing can drive an instrument after the bench let it go.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyvisa.errors

from spinlab.errors import InstrumentError, InstrumentFaultError

log = logging.getLogger("spinlab.bench")

#: What an instrument fault looks like from Python.
FAULTS = (InstrumentError, pyvisa.errors.Error, OSError)
#: How long a reconnection after an interrupted step waits for ``*IDN?``.
RESYNC_PROBE_S = 1.0


class StepFailed(Exception):
    """``link``'s instrument failed while doing ``step`` (internal to the bench)."""

    def __init__(self, link: Link, step: str, cause: BaseException) -> None:
        super().__init__(f"{link.role} failed while {step}: {one_line(cause)}")
        self.link = link
        self.step = step
        self.cause = cause


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (VISA errors span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, InstrumentError) else f"{type(exc).__name__}: {text}"


class Link:
    """``open_driver(timeout_s)`` opens a connection and returns the driver on it; the link
    then checks that the instrument answers ``*IDN?``."""

    def __init__(
        self, key: str, role: str, resource: str, open_driver: Callable[[float], Any], timeout_s: float
    ) -> None:
        self.key = key  # "awg", "scope", "source"
        self.role = role  # what messages call it
        self.resource = resource
        self.timeout_s = timeout_s
        self._open = open_driver
        self._lock = threading.RLock()
        #: True once closed: every use is refused from then on
        self.closed = False
        self.driver = open_driver(timeout_s)
        #: False once it failed to answer after a reconnection: do not wait on it any more
        self.answering = True
        #: True after a step was left mid-exchange: the next step reconnects first
        self._out_of_step = False
        try:
            #: the instrument's ``*IDN?`` (it must answer before it is used)
            self.idn: str = self.driver.id
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[Any]:
        """``with link.step("reading the waveform") as scope: ...`` (the instrument is this
        thread's for the block)."""
        with self._lock:
            self._refuse_if_closed()
            if self._out_of_step:
                self._resync()
            try:
                yield self.driver
            except (StepFailed, InstrumentFaultError):
                raise
            except FAULTS as exc:
                raise StepFailed(self, what, exc) from exc
            except BaseException:
                # left mid-exchange (a signal raises wherever the run thread is, perhaps between
                # a query and its reply): the next step would read that reply as its own (a park
                # read a mode code of 1 as a set point of 1 A), so it starts on a fresh connection
                self._out_of_step = True
                raise

    def _resync(self) -> None:
        """A fresh connection after a step that was left mid-exchange (stale replies go with
        the old one); an instrument that does not answer is left to the step to find out."""
        self._out_of_step = False
        with contextlib.suppress(StepFailed):
            self._reconnect(min(self.timeout_s, RESYNC_PROBE_S), tries=2)

    def _refuse_if_closed(self) -> None:
        if self.closed:
            raise InstrumentError(
                f"the connection to the {self.role} at {self.resource} is closed; open the station again"
            )

    def reconnect(self, probe_s: float, tries: int = 2) -> None:
        """Close the connection (stale replies go with it) and open a new one that must answer
        ``*IDN?`` within ``probe_s`` (``tries`` fresh connections: one lost reply is not a dead
        instrument); raises :class:`StepFailed` (and stops waiting on this instrument) when it
        never does; a closed link is never reopened."""
        with self._lock:
            self._reconnect(probe_s, tries)

    def _reconnect(self, probe_s: float, tries: int) -> None:
        for attempt in range(tries):
            self._refuse_if_closed()
            self._disconnect()
            try:
                self.driver = self._open(probe_s)
                self.idn = self.driver.id
            except FAULTS as exc:
                if attempt + 1 < tries:
                    continue
                # keep the new connection if there is one: writes (outputs off) may still get through
                self.answering = False
                raise StepFailed(self, "reconnecting", exc) from exc
            self.set_timeout(self.timeout_s)
            return

    def set_timeout(self, timeout_s: float) -> None:
        connection = getattr(self.driver.adapter, "connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.timeout = timeout_s * 1000

    def close(self) -> None:
        """Close the connection for good (waits for a step in progress in another thread)."""
        with self._lock:
            self.closed = True
            self._disconnect()

    def _disconnect(self) -> None:
        try:
            self.driver.adapter.close()
        except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
            log.debug("closing the %s connection failed", self.role, exc_info=True)
