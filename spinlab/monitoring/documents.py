"""The run engine's live documents on the ZeroMQ stream, under the engine's own names: ``opening``,
``start``, ``progress``, ``result``, ``preview`` and ``stop`` carry the document's fields as they are (less
``run_id``, which every message carries; a preview's waveform goes decimated, as the array
``samples``), a ``telemetry`` document goes out under the topic the plan gave it (``twin.loss``,
...). ``descriptor``, ``event`` and ``dataset`` stay in the run file.

It binds its socket when it is created, so ``endpoint`` is known (port 0) before the run
starts. From ``opening`` on (before the device is opened, which takes seconds on a bench) every
message carries the run's id, so a monitor shows the run from then on, and records of the
``spinlab`` logger go out as ``log``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from spinlab.engine.documents import (
    OpeningDoc,
    PreviewDoc,
    ProgressDoc,
    ResultDoc,
    StartDoc,
    StopDoc,
    TelemetryDoc,
    to_jsonable,
)
from spinlab.monitoring.loghandler import PublishingHandler
from spinlab.monitoring.messages import preview
from spinlab.monitoring.publisher import Publisher

log = logging.getLogger("spinlab.monitoring.documents")


class MonitorPublisher:
    """``RunEngine.run(plan, ..., subscribers=[MonitorPublisher("tcp://127.0.0.1:5555")])``."""

    def __init__(self, address: str, *, preview_points: int = 1000, **publisher_options: Any) -> None:
        self.publisher = Publisher(address, **publisher_options)
        self.endpoint = self.publisher.endpoint
        self.preview_points = preview_points
        self._handler: PublishingHandler | None = None

    @property
    def dropped(self) -> int:
        return int(self.publisher.dropped)

    def publish(
        self, topic: str, payload: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None
    ) -> None:
        self.publisher.publish(topic, to_jsonable(dict(payload or {})), arrays)

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(doc)

    def _on_opening(self, doc: OpeningDoc) -> None:
        self._attach(doc["run_id"])
        self.publish("opening", _fields(doc))

    def _on_start(self, doc: StartDoc) -> None:
        self._attach(doc["run_id"])
        self.publish("start", _fields(doc))

    def _attach(self, run_id: str) -> None:
        self.publisher.run_id = run_id
        if self._handler is None:
            self._handler = PublishingHandler(self.publish)
            logging.getLogger("spinlab").addHandler(self._handler)

    def _on_progress(self, doc: ProgressDoc) -> None:
        self.publish("progress", _fields(doc))

    def _on_telemetry(self, doc: TelemetryDoc) -> None:
        self.publish(doc["topic"], doc.get("payload"), doc.get("arrays"))

    def _on_preview(self, doc: PreviewDoc) -> None:
        wave = doc["waveform"]
        small = preview(wave, self.preview_points)
        self.publish(
            "preview",
            {
                "name": doc["name"],
                "dt_s": small.dt_s,
                "unit": small.unit,
                "t0_s": small.t0_s,
                "decimation": small.meta["decimation"],
                "factor": small.meta["factor"],
                "n_original": int(np.shape(wave.samples)[-1]),
            },
            {"samples": small.samples},
        )

    def _on_result(self, doc: ResultDoc) -> None:
        self.publish("result", _fields(doc))

    def _on_stop(self, doc: StopDoc) -> None:
        self.publish("stop", _fields(doc))  # the publisher stamps its final monitor_dropped
        self._detach()

    def _detach(self) -> None:
        if self._handler is not None:
            logging.getLogger("spinlab").removeHandler(self._handler)
            self._handler = None

    def close(self) -> None:
        self._detach()
        self.publisher.close()


def _fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document's fields on the wire: all but ``run_id`` (the message header carries it)."""
    return {key: value for key, value in doc.items() if key != "run_id"}


__all__ = ["MonitorPublisher"]
