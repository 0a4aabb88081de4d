"""The web view of a run: ``spinlab monitor ADDRESS --web [HOST:]PORT``.

* :class:`WebMonitor` - the aiohttp server: static page, one WebSocket per browser, optional
  token-guarded control (:mod:`.server`).
* :class:`Relay` - what a late-joining page gets, and the bounded, coalescing per-browser
  queues that keep a slow page from costing memory or time upstream (:mod:`.relay`).
"""

from spinlab.monitoring.web.relay import Relay
from spinlab.monitoring.web.server import WebMonitor, parse_web_address

__all__ = ["WebMonitor", "Relay", "parse_web_address"]
