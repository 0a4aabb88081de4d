"""Remote monitoring and control of runs over ZeroMQ.

* :class:`Publisher` - a run's event stream (XPUB, typed msgpack headers + raw array frames,
  never blocks acquisition, last-value cache for late joiners). Wire format: :mod:`.messages`.
* :class:`Subscriber` - validated, de-duplicated reading of that stream.
* :class:`ControlServer` / :class:`ControlClient` - CURVE-authenticated status/pause/resume/abort.
* :func:`create_keys` - the key directory layout of the control channel (:mod:`.keys`).
* :func:`preview` - min/max or mean decimation of waveforms for display.
"""

from spinlab.errors import MessageFormatError, ProtocolError
from spinlab.monitoring.control import ControlClient, ControlError, ControlServer
from spinlab.monitoring.keys import create_keys
from spinlab.monitoring.loghandler import PublishingHandler
from spinlab.monitoring.messages import PROTOCOL_VERSION, TOPICS, Message, preview
from spinlab.monitoring.publisher import Publisher
from spinlab.monitoring.subscriber import Subscriber

__all__ = [
    "Publisher",
    "Subscriber",
    "ControlServer",
    "ControlClient",
    "ControlError",
    "create_keys",
    "PublishingHandler",
    "Message",
    "MessageFormatError",
    "ProtocolError",
    "PROTOCOL_VERSION",
    "TOPICS",
    "preview",
]
