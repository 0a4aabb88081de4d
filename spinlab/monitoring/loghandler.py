"""Forward records of the ``spinlab`` logger to a run's event stream (topic ``log``).

Installed by :class:`spinlab.monitoring.documents.MonitorPublisher` while a run is active. The handler
publishes what the ``spinlab`` logger lets through (its effective level: WARNING by default;
``logging.getLogger("spinlab").setLevel(logging.INFO)`` shows more). Records from
``spinlab.monitoring`` itself are not forwarded, so a monitoring problem cannot feed back
into the stream it is about.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

_SKIP_PREFIX = "spinlab.monitoring"


class PublishingHandler(logging.Handler):
    """``logging.Handler`` whose ``emit`` calls ``publish("log", {...})``; never raises."""

    def __init__(self, publish: Callable[..., None], level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._publish = publish
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_SKIP_PREFIX) or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            payload = {
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage()[:2000],
                "time": record.created,
            }
            if record.exc_info and record.exc_info[0] is not None:
                payload["exception"] = record.exc_info[0].__name__
            self._publish("log", payload)
        except Exception:  # a log line must never break the run
            pass
        finally:
            self._busy.on = False
