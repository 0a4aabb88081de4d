"""The event publisher: a run's side of the monitoring stream.

Design (why it can never slow acquisition):

* ``publish`` only encodes a small header, copies the (preview-sized) arrays and appends to a
  bounded in-process queue. When the queue is full the *oldest* message is dropped and counted,
  so the newest state (and ``stop``) always gets in. It never waits and never raises
  ZeroMQ errors into the caller.
* One background thread owns the socket and sends with ``zmq.NOBLOCK`` and ``copy=False``.
  ``SNDHWM`` bounds what ZeroMQ buffers per subscriber; a subscriber that stops reading just
  loses messages (it sees gaps in ``seq``), nobody waits for it.
* Drops are reported in every ``monitor.stats`` message (periodic, once the publisher has a run
  id: before that it would announce a run with no id) and in ``stop`` (``monitor_dropped``).

Late joiners (last-value cache on an XPUB socket): the socket is an ``XPUB`` with
``ZMQ_XPUB_VERBOSE``, so the sender thread sees every subscription, including repeated ones.
For each subscription it re-sends, in ``seq`` order, the latest message of every cached topic
matching the subscription prefix (key: topic, plus the payload's ``name`` for per-name topics
such as ``preview`` and ``instrument.status``), marked ``replay: true``. A new subscriber thus
gets the run config (``start``), the latest progress, preview, results, ... at once, on
the same socket it already reads. Subscribers that already had those messages recognise the
copies (``replay`` with a ``seq`` they have passed) and skip them. We chose this over a separate
snapshot ROUTER (the Clone pattern) because a client needs one SUB socket and no second
round trip; the cost is that replays fan out to every subscriber, which is tiny at lab rates.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import zmq

from spinlab.errors import ConfigError, MessageFormatError
from spinlab.monitoring import messages
from spinlab.monitoring.addresses import bind_endpoint

log = logging.getLogger("spinlab.monitoring.publisher")

_MAX_CACHE_KEYS = 256


class Publisher:
    """Publish typed messages on a ZeroMQ XPUB socket from a background thread.

    ``Publisher("tcp://127.0.0.1:5555", run_id=...)``; ``publish(topic, payload, arrays)``;
    ``close()``. Messages leave at most ``flush_interval_s`` after ``publish`` (bursts are sent
    together, which keeps wake-ups, and so CPU stolen from acquisition, low); ``monitor.stats``
    goes out every ``stats_interval_s``. ``endpoint`` is the bound address (useful with port 0). ``dropped`` counts
    messages that were accepted by ``publish`` but never handed to ZeroMQ.
    """

    def __init__(
        self,
        address: str,
        run_id: str = "",
        *,
        queue_size: int = 1024,
        queue_bytes: int = 64 * 1024 * 1024,
        sndhwm: int = 1000,
        stats_interval_s: float = 1.0,
        linger_s: float = 0.25,
        flush_interval_s: float = 0.02,
        max_replays_per_s: float = 50.0,
    ) -> None:
        if queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {queue_size}")
        self.run_id = run_id
        self.queue_size = int(queue_size)
        self.queue_bytes = int(queue_bytes)
        self.max_replays_per_s = float(max_replays_per_s)
        self.stats_interval_s = float(stats_interval_s)
        self.flush_interval_s = float(flush_interval_s)
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._sock.setsockopt(zmq.SNDHWM, int(sndhwm))
        self._sock.setsockopt(zmq.MAXMSGSIZE, 1024)  # inbound traffic is subscriptions only
        self._sock.setsockopt(zmq.LINGER, int(linger_s * 1000))
        endpoint = bind_endpoint(address, "monitor")
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            raise ConfigError(
                f"cannot bind the monitor stream to {endpoint}: {exc}; pick another port"
            ) from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._queued_bytes = 0
        self._replay_tokens = self.max_replays_per_s
        self._replay_refill = time.monotonic()
        self._seq = 0
        self._stats = {
            "published": 0,
            "sent": 0,
            "dropped": 0,
            "rejected": 0,
            "subscriptions": 0,
            "replayed": 0,
            "replays_refused": 0,
            "bad_inbound": 0,
        }
        self._cache: dict[tuple[str, str | None], tuple] = {}
        self._idle = False
        self._closing = False
        self._closed = False
        self._last_drop_log = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._serve, name="spinlab-publisher", daemon=True)
        self._thread.start()

    # --- caller side -----------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Messages accepted but not sent (queue overflow or a send error)."""
        return self._stats["dropped"]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "queued": len(self._queue)}

    def publish(
        self, topic: str, header: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None
    ) -> None:
        """Queue one message; never blocks. Invalid topics/payloads raise MessageFormatError."""
        if self._closing:
            return
        now = time.time()
        payload = dict(header or {})
        with self._lock:
            seq = self._seq
            try:
                frames = messages.encode(topic, self.run_id, seq, now, payload, arrays)
            except MessageFormatError:
                self._stats["rejected"] += 1
                raise
            size = sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
            if size > self.queue_bytes:
                self._stats["rejected"] += 1
                raise MessageFormatError(
                    f"{topic!r} message of {size} bytes exceeds the monitor queue ({self.queue_bytes} "
                    "bytes); publish a preview (Run.preview) instead of the full data"
                )
            dropped_before = self._stats["dropped"]
            while self._queue and (
                len(self._queue) >= self.queue_size or self._queued_bytes + size > self.queue_bytes
            ):
                self._queued_bytes -= self._queue.popleft()[-1]  # drop-oldest: newest state gets in
                self._stats["dropped"] += 1
            if topic == "stop":  # the run's end says how much the monitors missed, counted now
                payload["monitor_dropped"] = self._stats["dropped"]
                frames = messages.encode(topic, self.run_id, seq, now, payload, arrays)
            self._seq += 1
            self._stats["published"] += 1
            self._queue.append((topic, seq, now, payload, frames, size))
            self._queued_bytes += size
            wake = self._idle
            self._idle = False
            dropped_now = self._stats["dropped"] > dropped_before
        if dropped_now:
            self._note_drop()
        if wake:
            self._wake()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (bounded by ``timeout_s``), then release the socket."""
        if self._closed:
            return
        self._closing = True
        self._wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("monitor publisher did not stop within %.1f s; abandoning it", timeout_s)
            return
        self._closed = True
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full means the thread is already due to wake

    def _note_drop(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:
            self._last_drop_log = now
            log.warning(
                "monitor queue full (%d messages or %d bytes): dropping the oldest (%d dropped so far)",
                self.queue_size,
                self.queue_bytes,
                self._stats["dropped"],
            )

    # --- sender thread ---------------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_stats = time.monotonic() + self.stats_interval_s
        try:
            while not self._closing:
                self._send_queued()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + self.stats_interval_s
                    self._publish_stats()
                    continue
                with self._lock:
                    if self._queue:
                        continue
                    self._idle = True  # the next publish writes the wake pipe
                events = dict(poller.poll(max(1, int((next_stats - now) * 1000))))
                with self._lock:
                    self._idle = False
                if self._sock in events:
                    self._handle_subscriptions()
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    # Let a burst accumulate, so a fast acquisition costs one wake-up per
                    # flush interval instead of one per message; subscriptions are still served.
                    if self.flush_interval_s > 0 and not self._closing:
                        if self._sock.poll(int(self.flush_interval_s * 1000)):
                            self._handle_subscriptions()
            self._publish_stats()
            self._send_queued()
        except Exception:  # the run must go on even if monitoring dies
            log.exception("monitor publisher thread failed; events are no longer published")
        finally:
            self._sock.close()
            self._ctx.term()

    def _publish_stats(self) -> None:
        if not self.run_id:  # no run yet: a stats message would tell a monitor "a run with no id"
            return
        try:
            self.publish("monitor.stats", self.stats())
        except Exception:
            log.exception("could not publish monitor.stats")

    def _send_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                topic, seq, t, payload, frames, size = self._queue.popleft()
                self._queued_bytes -= size
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                with self._lock:
                    self._stats["dropped"] += 1
                self._note_drop()
                continue
            with self._lock:
                self._stats["sent"] += 1
            self._remember(topic, seq, t, payload, frames)

    def _remember(self, topic: str, seq: int, t: float, payload: dict, frames: list) -> None:
        key = messages.cache_key(topic, payload)
        if key not in self._cache and len(self._cache) >= _MAX_CACHE_KEYS:
            return
        self._cache[key] = (seq, topic, t, payload, frames)

    def _handle_subscriptions(self) -> None:
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not frame or frame[0] not in (0, 1):
                self._stats["bad_inbound"] += 1
                log.warning("ignored a non-subscription message on the monitor socket (%d bytes)", len(frame))
                continue
            if frame[0] == 1:
                self._stats["subscriptions"] += 1
                if self._may_replay():
                    self._replay(frame[1:])
                else:
                    self._stats["replays_refused"] += 1

    def _may_replay(self) -> bool:
        """Token bucket: a flood of (re)subscriptions must not turn into a CPU drain here."""
        now = time.monotonic()
        self._replay_tokens = min(
            self.max_replays_per_s, self._replay_tokens + (now - self._replay_refill) * self.max_replays_per_s
        )
        self._replay_refill = now
        if self._replay_tokens < 1:
            return False
        self._replay_tokens -= 1
        return True

    def _replay(self, prefix: bytes) -> None:
        """Re-send the latest message of each cached topic matching ``prefix`` (in seq order)."""
        entries = sorted(
            (e for e in self._cache.values() if e[1].encode().startswith(prefix)), key=lambda e: e[0]
        )
        for seq, topic, t, payload, frames in entries:
            replay = [frames[0], messages.mark_replay(frames[1]), *frames[2:]]
            try:
                self._sock.send_multipart(replay, flags=zmq.NOBLOCK, copy=False)
                self._stats["replayed"] += 1
            except zmq.Again:
                with self._lock:
                    self._stats["dropped"] += 1
