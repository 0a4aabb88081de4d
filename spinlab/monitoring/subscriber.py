"""The watcher's side of the stream: connect, validate, de-duplicate replays, count gaps.

Used by ``spinlab monitor``, the tests and the benchmark. Every received message is validated
with :func:`spinlab.monitoring.messages.decode`; anything malformed is counted in ``rejected``
and logged, never raised to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import zmq

from spinlab.errors import MessageFormatError
from spinlab.monitoring import messages
from spinlab.monitoring.addresses import connect_endpoint

log = logging.getLogger("spinlab.monitoring.subscriber")


class Subscriber:
    """SUB socket connected to a run's monitor address.

    ``recv(timeout_s)`` returns the next accepted :class:`~spinlab.monitoring.messages.Message`
    or ``None`` on timeout. Bookkeeping, per run id:

    * ``missed``: messages that never arrived (gaps in ``seq`` between live messages),
    * ``rejected``: frames that failed validation,
    * after a gap the subscriber re-sends its subscriptions (at most every ``resync_s``): the
      publisher's last-value cache then replays the latest state, so a watcher that fell behind
      (e.g. its ZeroMQ buffer overflowed during a burst) still ends up with ``stop`` and
      the newest value of every topic;
    * replayed copies are skipped (``duplicates``) when a message of the same cache key
      (topic, or topic + name) with the same or a newer ``seq`` was already seen; the
      replay may arrive after the first live messages, so this is decided per key.
    """

    def __init__(
        self,
        address: str,
        topics: Sequence[str] = ("",),
        *,
        rcvhwm: int = 10000,
        resync_s: float = 0.5,
        context: zmq.Context | None = None,
    ) -> None:
        self.address = connect_endpoint(address)
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
        self._sock.setsockopt(zmq.MAXMSGSIZE, messages.MAX_MESSAGE_BYTES)
        self._sock.setsockopt(zmq.LINGER, 0)
        self.topics = [t.encode() for t in topics]
        for topic in self.topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.resync_s = float(resync_s)
        self._last_resync = 0.0
        self.resyncs = 0
        self._sock.connect(self.address)
        self.missed = 0
        self.rejected = 0
        self.duplicates = 0
        self.received = 0
        #: Called with the raw frames of every accepted message (``--record`` saves them).
        self.on_accept = None
        self._last_live: dict[str, int] = {}
        self._last_by_key: dict[tuple, int] = {}
        self._live_runs: set[str] = set()

    def recv(self, timeout_s: float | None = None) -> messages.Message | None:
        """Next valid, new message; ``None`` after ``timeout_s`` seconds without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining is not None and not self._sock.poll(int(remaining * 1000)):
                return None
            if remaining is None:
                self._sock.poll()
            frames = self._sock.recv_multipart(copy=False)
            msg = self.accept(frames)
            if msg is not None:
                return msg

    def drain(self, max_messages: int = 10_000) -> list[messages.Message]:
        """Every message already waiting (no blocking): lets a watcher wake up a few times per
        second and process a batch, instead of once per message."""
        out = []
        for _ in range(max_messages):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = self.accept(frames)
            if msg is not None:
                out.append(msg)
        return out

    def accept(self, frames) -> messages.Message | None:
        """Validate raw frames and update bookkeeping; ``None`` when rejected or a duplicate."""
        try:
            msg = messages.decode(frames)
        except MessageFormatError as exc:
            self.rejected += 1
            log.warning("rejected a monitoring message: %s", exc)
            return None
        key = (msg.run_id, *messages.cache_key(msg.topic, msg.payload))
        seen = self._last_by_key.get(key)
        if msg.replay and seen is not None and msg.seq <= seen:
            self.duplicates += 1
            return None
        if seen is None or msg.seq > seen:
            self._last_by_key[key] = msg.seq
        last = self._last_live.get(msg.run_id)
        if not msg.replay:
            if last is not None and msg.seq > last + 1:
                self.missed += msg.seq - last - 1
                self._resync()
            self._live_runs.add(msg.run_id)
        if (last is None or msg.seq > last) and (not msg.replay or msg.run_id not in self._live_runs):
            # a replay only sets the baseline before the first live message: the cache's
            # newest entry is the last message sent before we joined
            self._last_live[msg.run_id] = msg.seq
        self.received += 1
        if self.on_accept is not None:
            self.on_accept(frames)
        return msg

    def _resync(self) -> None:
        now = time.monotonic()
        if now - self._last_resync < self.resync_s:
            return
        self._last_resync = now
        self.resyncs += 1
        for topic in self.topics:  # XPUB_VERBOSE passes repeated subscriptions on: a replay
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)

    def __iter__(self) -> Iterator[messages.Message]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._sock.close(0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
