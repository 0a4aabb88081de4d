"""From one monitoring stream to many browsers: what a late joiner gets, and bounded queues.

The web bridge is just another subscriber. :class:`Relay` folds the accepted messages into
what a page needs when it (re)connects - the latest message per cache key
(:func:`spinlab.monitoring.messages.cache_key`: per topic, or per topic and name for waveforms
and instrument status) plus bounded histories of the *series* topics (loss and NRMSE curves,
log lines, errors, control events) - and hands every message to one :class:`ClientQueue` per
browser.

A browser that reads slowly, or not at all, costs a bounded amount of memory: in its queue a
newer value of the same key replaces the pending one, and series entries beyond
``max_series`` push out the oldest; both count as ``lost`` and the page is told. Nothing here
ever waits for a browser, so nothing upstream (the ZeroMQ socket, the run) can be held up.

Each message is turned into JSON at most once, when the first browser needs it
(:class:`Entry`), so a value replaced before anyone sent it costs nothing to encode.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from spinlab.monitoring.messages import Message, cache_key, preview
from spinlab.monitoring.view import message_to_json

log = logging.getLogger("spinlab.monitoring.web")

#: Topics whose every message matters (a curve, a log): kept as bounded histories, not as the
#: latest value. Values: how many a late joiner gets.
SERIES_TOPICS = {"twin.loss": 2000, "twin.nrmse": 2000, "log": 200, "error": 50, "control": 50}
#: Distinct latest-value keys kept (the publisher's cache holds 256 too); more are refused.
MAX_STATE_KEYS = 256
#: Points of one plotted array sent to a browser (previews are ~1000 already).
MAX_POINTS = 2000
#: The ETA of ``progress`` uses the rate over this many recent seconds.
ETA_WINDOW_S = 60.0


class Entry:
    """One accepted message, shared by every browser's queue; its JSON text is made once."""

    __slots__ = ("msg", "key", "eta_s", "text")

    def __init__(self, msg: Message, key: tuple, eta_s: float | None = None) -> None:
        self.msg, self.key, self.eta_s = msg, key, eta_s
        #: the browser's JSON; None until first needed, "" when the payload cannot be sent
        self.text: str | None = None

    @property
    def seq(self) -> int:
        return self.msg.seq


def browser_json(msg: Message, eta_s: float | None = None) -> dict[str, Any]:
    """The ``--json`` line of ``msg`` with every numeric array reduced to one plottable row.

    A batch is shown by its first row (as the terminal view does), complex values by their
    magnitude, and rows longer than :data:`MAX_POINTS` are min/max-decimated; each array entry
    carries the ``dt_s``/``t0_s`` of the row it sends and ``x_unit`` (``s``, or ``sample`` when
    the payload gives no ``dt_s``), so the page can draw the x axis.
    """
    payload = msg.payload
    dt_s = _positive(payload.get("dt_s"))
    x_unit = "s" if dt_s is not None else "sample"  # without a sample interval: sample index
    dt_s = dt_s or 1.0
    t0_s = _finite(payload.get("t0_s")) or 0.0
    rows, grids = {}, {}
    for name, arr in msg.arrays.items():
        if arr.dtype.kind not in "biufc" or arr.ndim == 0 or arr.size == 0:
            continue
        row = np.asarray(arr).reshape(-1, arr.shape[-1])[0]
        row = np.abs(row) if row.dtype.kind == "c" else row.astype(float)
        if np.all(np.isfinite(row)):
            small = preview(row, MAX_POINTS, "minmax", dt_s=dt_s)
            rows[name], step_s, offset_s = small.samples, small.dt_s, small.t0_s
        else:  # NaN/inf are no Waveform: plain striding keeps them (sent as null, drawn as gaps)
            step = math.ceil(row.size / MAX_POINTS)
            rows[name], step_s, offset_s = row[::step], dt_s * step, 0.0
        grids[name] = {"dt_s": step_s, "t0_s": t0_s + offset_s, "x_unit": x_unit}
    out = message_to_json(dataclasses.replace(msg, arrays=rows), max_array=MAX_POINTS)
    for name, grid in grids.items():
        out["arrays"][name].update(grid)
    if eta_s is not None:
        out["eta_s"] = eta_s
    return out


class ClientQueue:
    """What one browser has not been sent yet: latest value per key, plus a bounded FIFO of
    series messages. ``lost`` counts what it will never get (replaced or pushed out)."""

    def __init__(self, max_series: int = 1000) -> None:
        self.max_series = int(max_series)
        self._latest: dict[tuple, Entry] = {}
        self._series: collections.deque[Entry] = collections.deque()
        self.lost = 0
        self.sent = 0

    def put(self, entry: Entry, series: bool) -> None:
        if series:
            if len(self._series) >= self.max_series:
                self._series.popleft()
                self.lost += 1
            self._series.append(entry)
            return
        if self._latest.pop(entry.key, None) is not None:
            self.lost += 1  # the browser never saw the value this one replaces
        self._latest[entry.key] = entry

    def take(self) -> list[Entry]:
        """Everything pending, oldest first (the page folds them in ``seq`` order)."""
        entries = sorted([*self._latest.values(), *self._series], key=lambda e: e.seq)
        self._latest.clear()
        self._series.clear()
        self.sent += len(entries)
        return entries

    def __len__(self) -> int:
        return len(self._latest) + len(self._series)


class Relay:
    """The current run's state for late joiners, and fan-out to the browsers' queues.

    Thread-safe: the ZeroMQ reader thread calls :meth:`ingest`; the web server's event loop
    calls :meth:`attach`, :meth:`detach` and :meth:`take`.
    """

    def __init__(self, max_series_per_client: int = 1000) -> None:
        self.max_series_per_client = int(max_series_per_client)
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self._latest: dict[tuple, Entry] = {}
        self._series = {topic: collections.deque(maxlen=n) for topic, n in SERIES_TOPICS.items()}
        self._clients: set[ClientQueue] = set()
        self._progress_points: collections.deque[tuple[float, int]] = collections.deque()
        self.counts = {"messages": 0, "keys_refused": 0, "unencodable": 0}

    def ingest(self, messages: Iterable[Message]) -> None:
        with self._lock:
            for msg in messages:
                self._ingest_one(msg)

    def _ingest_one(self, msg: Message) -> None:
        if msg.run_id != self.run_id:  # a new run on the same address: start afresh
            self.run_id = msg.run_id
            self._latest.clear()
            for history in self._series.values():
                history.clear()
            self._progress_points.clear()
        self.counts["messages"] += 1
        entry = Entry(
            msg, cache_key(msg.topic, msg.payload), self._eta_s(msg) if msg.topic == "progress" else None
        )
        series = msg.topic in self._series
        if series:
            self._series[msg.topic].append(entry)
        elif entry.key in self._latest or len(self._latest) < MAX_STATE_KEYS:
            self._latest[entry.key] = entry
        else:
            self.counts["keys_refused"] += 1
            return
        for client in self._clients:
            client.put(entry, series)

    def _eta_s(self, msg: Message) -> float | None:
        """Seconds left at the rate of the last :data:`ETA_WINDOW_S` (stages of a run differ in
        speed, so the rate since the start would mislead)."""
        done, total = msg.payload.get("done"), msg.payload.get("total")
        if not (_is_int(done) and _is_int(total)) or total <= 0:
            return None
        points, now = self._progress_points, msg.time_s
        if points and done < points[-1][1]:  # counting started over (a new stage, a resume)
            points.clear()
        if not points or now - points[-1][0] >= 0.5:  # at most 2 points a second are kept
            points.append((now, done))
        while now - points[0][0] > ETA_WINDOW_S and len(points) > 1:
            points.popleft()
        t0, done0 = points[0]
        rate = (done - done0) / (now - t0) if now > t0 else 0.0
        return round(max(total - done, 0) / rate, 1) if rate > 0 else None

    def attach(self) -> tuple[ClientQueue, list[Entry]]:
        """A new browser's queue and the snapshot it starts from (nothing in both, nothing missed)."""
        with self._lock:
            client = ClientQueue(self.max_series_per_client)
            self._clients.add(client)
            return client, self._snapshot()

    def detach(self, client: ClientQueue) -> None:
        with self._lock:
            self._clients.discard(client)

    def take(self, client: ClientQueue) -> list[Entry]:
        with self._lock:
            return client.take()

    def pending(self, client: ClientQueue) -> int:
        with self._lock:
            return len(client)

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> list[Entry]:
        entries = [*self._latest.values(), *(e for h in self._series.values() for e in h)]
        return sorted(entries, key=lambda e: e.seq)

    def encode(self, entries: Iterable[Entry]) -> str:
        """A JSON array of the entries' browser JSON; unencodable payloads are left out (and
        counted once each)."""
        texts = []
        for entry in entries:
            if entry.text is None:
                try:
                    entry.text = json.dumps(
                        browser_json(entry.msg, entry.eta_s), allow_nan=False, separators=(",", ":")
                    )
                except (TypeError, ValueError) as exc:
                    entry.text = ""
                    self.counts["unencodable"] += 1
                    log.warning("not sending a %s message to browsers: %s", entry.msg.topic, exc)
            if entry.text:
                texts.append(entry.text)
        return "[" + ",".join(texts) + "]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None


def _positive(value: Any) -> float | None:
    value = _finite(value)
    return value if value is not None and value > 0 else None
