"""Wire format of the monitoring stream: typed, versioned, never pickled.

A message is one ZeroMQ multipart message::

    [topic, header, array_0, array_1, ...]

* ``topic``   UTF-8 topic name (``start``, ``progress``, ...); first so SUB prefix filters work.
* ``header``  a msgpack map (at most :data:`MAX_HEADER_BYTES`)::

      {"v": 1, "topic": str, "run": str, "seq": int, "t": float (unix s), "replay": bool,
       "payload": {...plain msgpack values...},
       "arrays": [{"name": str, "dtype": "<f8", "shape": [..]}, ...]}

* ``array_i`` the raw C-contiguous bytes of array ``i``; ``dtype`` is ``numpy.dtype.str`` and
  must be one of :data:`ARRAY_DTYPES` (little-endian numeric only: no objects, no strings; the one
  allow-list of :mod:`spinlab.engine.arrays`, the codec the run journal uses too).
  Zero-length axes are allowed; an array may not have more than :data:`MAX_ARRAY_DIMS` axes,
  nor more cells than :data:`MAX_MESSAGE_BYTES` counting each empty axis as one (so an empty
  array cannot describe a shape too big to make or to print).

A payload holds plain values only: None, bool, int, float, str, bytes, lists and maps with
string keys, nested at most :data:`MAX_PAYLOAD_DEPTH` containers deep. msgpack extension
types (timestamps included) are refused, so everything :func:`decode` accepts can be shown and
printed as JSON. :func:`encode` converts numpy scalars, small numeric arrays, tuples and sets
to plain values and refuses what a subscriber would reject.

``seq`` counts every message a publisher accepted, starting at 0, so a gap seen by a subscriber
is a message it did not get (dropped in the publisher or by ZeroMQ's high-water mark).
``replay`` marks a copy re-sent from the last-value cache for a late joiner (see
:mod:`spinlab.monitoring.publisher`); it keeps its original ``seq`` and ``t``.

Both ends validate: :func:`decode` turns anything malformed into :class:`ProtocolError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from spinlab.engine.arrays import ARRAY_DTYPES, ArrayCodecError, allowed, decode_array, little_endian
from spinlab.errors import ProtocolError
from spinlab.waveform import Waveform

PROTOCOL_VERSION = 1

#: Topics spinlab publishes (payload keys in brackets). Other dotted lower-case names are
#: allowed, so protocols can add their own; subscribers ignore topics they do not know.
TOPICS = {
    "opening": "a run is opening its device (seconds on a bench) [plan, config, seed, address, path, resumed]",
    "start": "run began: the engine's start document [plan, config, seed, address, path, started, ...]",
    "stop": "run ended: the stop document [status, reason, error, results, events, monitor_dropped]",
    "progress": "step counter [done, total, stage, + protocol fields]",
    "instrument.status": "one instrument's state [name, + fields]",
    "preview": "decimated preview [name, dt_s, unit, t0_s, decimation, factor] + array 'samples'",
    "twin.loss": "training loss [step, loss]",
    "twin.nrmse": "validation NRMSE [step, nrmse]",
    "result": "summary values the plan just reported [values]",
    "log": "log record of the spinlab logger [level, logger, message, time]",
    "control": "a control command was obeyed [command, client, state]",
    "monitor.stats": "publisher health [published, sent, dropped, queued, oversize]",
    "sweep.start": "a sweep began [plan, device, total, todo, skipped, mode, out, dashboard, spec]",
    "sweep.point": "a sweep point started or ended [index, key, values, seed, status, worker, run, error, results]",
    "sweep.progress": "sweep counters [done, total, running, failed, eta_s, elapsed_s]",
    "sweep.stop": "a sweep ended [status, counts by status, summary, plots]",
}

MAX_TOPIC_BYTES = 64
MAX_HEADER_BYTES = 256 * 1024
MAX_ARRAYS = 16
MAX_ARRAY_DIMS = 8
MAX_PAYLOAD_DEPTH = 32
#: Largest message (all frames) a publisher sends and a subscriber accepts.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


_TOPIC_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


@dataclass(frozen=True)
class Message:
    """One decoded, validated monitoring message."""

    topic: str
    run_id: str
    seq: int
    time_s: float
    payload: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    replay: bool = False


#: Topics whose latest value is kept per payload ``name`` rather than once per topic.
PER_NAME_TOPICS = ("preview", "instrument.status")


def cache_key(topic: str, payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """Identity of "the latest value" for the last-value cache and replay de-duplication."""
    name = payload.get("name") if topic in PER_NAME_TOPICS else None
    return topic, name if isinstance(name, str) else None


def check_topic(topic: str) -> bytes:
    """Validate a topic name and return its wire bytes."""
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ProtocolError(f"topic {topic!r} is not a dotted lower-case name like 'progress' or 'twin.loss'")
    raw = topic.encode()
    if len(raw) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"topic {topic!r} is longer than {MAX_TOPIC_BYTES} bytes")
    return raw


def wire_array(name: str, value: Any) -> np.ndarray:
    """A private, C-contiguous, little-endian copy of ``value`` that is allowed on the wire.

    The copy is what makes zero-copy sending safe: the caller may reuse its buffer at once.
    """
    arr = little_endian(_as_array(name, value))
    if not allowed(arr.dtype.str):
        raise ProtocolError(
            f"array {name!r} has dtype {arr.dtype} ({arr.dtype.str}); only numeric dtypes "
            f"{sorted(ARRAY_DTYPES)} may be published"
        )
    _check_shape(name, arr.shape)
    return np.array(arr, order="C", copy=True)


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, Waveform):
        return value.samples
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged lists, unconvertible objects
        raise ProtocolError(f"array {name!r} is not an array of numbers: {exc}") from None


def encode_header(
    topic: str,
    run_id: str,
    seq: int,
    time_s: float,
    payload: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    replay: bool = False,
) -> bytes:
    """Pack the header map (arrays must already be :func:`wire_array` copies)."""
    if not isinstance(run_id, str):
        raise ProtocolError(f"run id must be a string, got {type(run_id).__name__}")
    if seq < 0 or not math.isfinite(time_s):
        raise ProtocolError(f"sequence number {seq} must be >= 0 and time {time_s} finite")
    header = {
        "v": PROTOCOL_VERSION,
        "topic": topic,
        "run": run_id,
        "seq": int(seq),
        "t": float(time_s),
        "replay": bool(replay),
        "payload": _plain(dict(payload), topic),
        "arrays": [
            {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)} for name, arr in arrays.items()
        ],
    }
    try:
        raw = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"payload of {topic!r} cannot be packed: {exc}") from None
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header of {topic!r} is {len(raw)} bytes (> {MAX_HEADER_BYTES}); send bulk data "
            "as arrays, not in the payload"
        )
    return raw


def encode(
    topic: str,
    run_id: str,
    seq: int,
    time_s: float,
    payload: Mapping[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    replay: bool = False,
) -> list[Any]:
    """Build the frames of one message: ``[topic, header, *array buffers]``."""
    raw_topic = check_topic(topic)
    given = {str(k): _as_array(str(k), v) for k, v in (arrays or {}).items()}
    if len(given) > MAX_ARRAYS:
        raise ProtocolError(f"{len(given)} arrays in one message (max {MAX_ARRAYS})")
    total = sum(a.nbytes for a in given.values())
    if total > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"arrays of {topic!r} total {total} bytes (> {MAX_MESSAGE_BYTES}); "
            "publish a decimated preview instead"
        )
    wired = {name: wire_array(name, arr) for name, arr in given.items()}
    header = encode_header(topic, run_id, seq, time_s, payload or {}, wired, replay)
    return [raw_topic, header, *(memoryview(a.reshape(-1).view(np.uint8)) for a in wired.values())]


def mark_replay(header: bytes) -> bytes:
    """The same header with ``replay`` set: how the last-value cache re-sends a message."""
    fields = msgpack.unpackb(header, raw=False)
    fields["replay"] = True
    return msgpack.packb(fields, use_bin_type=True)


def decode(frames: Sequence[Any]) -> Message:
    """Validate and decode received frames (bytes or zmq.Frame); raise :class:`ProtocolError`."""
    frames = [f.buffer if hasattr(f, "buffer") else f for f in frames]
    if len(frames) < 2:
        raise ProtocolError(f"a message has at least 2 frames (topic, header), got {len(frames)}")
    total = sum(len(f) for f in frames)
    if total > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {total} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        topic = bytes(frames[0]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("topic frame is not UTF-8") from None
    check_topic(topic)
    if len(frames[1]) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header frame of {len(frames[1])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(bytes(frames[1]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    if type(header.get("v")) is not int or header["v"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {header.get('v')!r} is not supported (this spinlab speaks "
            f"{PROTOCOL_VERSION}); upgrade the older side"
        )
    _expect(header, "topic", str)
    if header["topic"] != topic:
        raise ProtocolError(f"topic frame {topic!r} disagrees with header topic {header['topic']!r}")
    _expect(header, "run", str)
    _expect(header, "seq", int)
    if header["seq"] < 0:
        raise ProtocolError(f"sequence number must be >= 0, got {header['seq']}")
    _expect(header, "t", (int, float))
    if not math.isfinite(header["t"]):
        raise ProtocolError("timestamp is not finite")
    _expect(header, "payload", dict)
    check_plain(header["payload"])
    replay = header.get("replay", False)
    if not isinstance(replay, bool):
        raise ProtocolError(f"header field 'replay' must be bool, got {type(replay).__name__}")
    _expect(header, "arrays", list)
    specs = header["arrays"]
    if len(specs) != len(frames) - 2:
        raise ProtocolError(f"header lists {len(specs)} arrays but {len(frames) - 2} array frames came")
    arrays = {}
    for spec, frame in zip(specs, frames[2:]):
        name, arr = _decode_array(spec, frame)
        arrays[name] = arr
    return Message(topic, header["run"], header["seq"], float(header["t"]), header["payload"], arrays, replay)


def _decode_array(spec: Any, frame: Any) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise ProtocolError("array spec must be a map")
    _expect(spec, "name", str)
    _expect(spec, "dtype", str)
    _expect(spec, "shape", list)
    shape = spec["shape"]
    if allowed(spec["dtype"]) and all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        _check_shape(spec["name"], shape)
    try:
        return spec["name"], decode_array(spec["dtype"], shape, frame)
    except ArrayCodecError as exc:
        raise ProtocolError(f"array {spec['name']!r}: {exc}") from None


def _expect(header: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> None:
    value = header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"header field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "/".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _check_shape(name: str, shape: Sequence[int]) -> None:
    if (
        len(shape) > MAX_ARRAY_DIMS
        or any(s < 0 for s in shape)
        or math.prod(max(s, 1) for s in shape) > MAX_MESSAGE_BYTES
    ):
        raise ProtocolError(
            f"array {name!r}: bad shape {list(shape)!r} (at most {MAX_ARRAY_DIMS} "
            f"axes of sizes >= 0 and {MAX_MESSAGE_BYTES} cells)"
        )


def _plain(value: Any, topic: str, depth: int = 0) -> Any:
    """``value`` as the plain values a payload may hold (see module docstring), or ProtocolError."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise ProtocolError(f"payload of {topic!r} is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= 4096:
        return _plain(value.tolist(), topic, depth)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping):
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None:
            raise ProtocolError(f"payload of {topic!r} has a non-string key {bad!r}")
        return {k: _plain(v, topic, depth + 1) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        value = _sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, topic, depth + 1) for v in value]
    raise ProtocolError(
        f"payload of {topic!r} cannot be packed: {type(value).__name__} is not a plain "
        "number, string, list or map"
    )


def _sorted(items: Any) -> list:
    try:
        return sorted(items)
    except TypeError:  # mixed types: any fixed order will do
        return sorted(items, key=repr)


_PLAIN_LEAVES = (type(None), bool, int, float, str, bytes)


def check_plain(value: Any, leaves: tuple[type, ...] = _PLAIN_LEAVES, depth: int = 0) -> None:
    """Refuse a decoded value holding anything but plain values (see module docstring)."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise ProtocolError(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(f"payload map keys must be strings, got {type(key).__name__}")
            check_plain(item, leaves, depth + 1)
    elif kind is list:
        for item in value:
            check_plain(item, leaves, depth + 1)
    elif kind not in leaves:
        raise ProtocolError(
            f"payload holds a {kind.__name__} (allowed: maps, lists, "
            f"{', '.join(t.__name__ for t in leaves)}; no msgpack extension types)"
        )


# --- previews -----------------------------------------------------------------------------
def preview(
    waveform: Waveform | np.ndarray, max_points: int = 1000, method: str = "minmax", dt_s: float | None = None
) -> Waveform:
    """Decimate a waveform for display so a preview stays small whatever the record length.

    ``minmax`` keeps the envelope (each bin contributes its min and its max, in time order, so
    spikes stay visible); ``mean`` averages each bin (good for noisy slow signals). A batch is
    decimated per row. Waveforms already short enough are returned unchanged. The result's
    ``meta`` records ``decimation`` and ``factor`` (input samples per output sample).
    """
    if not isinstance(waveform, Waveform):
        waveform = Waveform(np.asarray(waveform, dtype=float), dt_s or 1.0, unit="")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if method not in ("minmax", "mean"):
        raise ValueError(f"decimation method must be 'minmax' or 'mean', got {method!r}")
    n = waveform.n
    if n <= max_points:
        return waveform.with_samples(waveform.samples, decimation="none", factor=1)
    x = waveform.samples
    if method == "mean":
        bins = max_points
        factor = math.ceil(n / bins)
        out = _bin_reduce(x, factor, np.mean)
        return Waveform(
            out,
            waveform.dt_s * factor,
            waveform.unit,
            waveform.t0_s + 0.5 * (factor - 1) * waveform.dt_s,
            {**waveform.meta, "decimation": "mean", "factor": factor},
        )
    factor = math.ceil(n / (max_points // 2))
    out = _minmax_in_time_order(x.reshape(-1, n), factor).reshape(*x.shape[:-1], -1)
    return Waveform(
        out,
        waveform.dt_s * factor / 2,
        waveform.unit,
        waveform.t0_s,
        {**waveform.meta, "decimation": "minmax", "factor": factor / 2},
    )


def _minmax_in_time_order(x: np.ndarray, factor: int) -> np.ndarray:
    """Per bin of ``factor`` samples of each row: its min and max, whichever came first first
    (so the trace is honest). Index-based: arg-reductions are much cheaper than min/max over
    a short last axis, and this runs on the acquisition thread."""
    rows, n = x.shape
    full = (n // factor) * factor
    binned = x[:, :full].reshape(rows, -1, factor)
    lo, hi = binned.argmin(-1), binned.argmax(-1)
    if full < n:
        lo = np.concatenate([lo, x[:, full:].argmin(-1)[:, None]], axis=-1)
        hi = np.concatenate([hi, x[:, full:].argmax(-1)[:, None]], axis=-1)
    starts = np.arange(0, n, factor)
    idx = np.stack([np.minimum(lo, hi) + starts, np.maximum(lo, hi) + starts], axis=-1)
    return np.take_along_axis(x, idx.reshape(rows, -1), axis=-1)


def _bin_reduce(x: np.ndarray, factor: int, fn) -> np.ndarray:
    """Apply ``fn`` over consecutive bins of ``factor`` samples (last bin may be shorter)."""
    n = x.shape[-1]
    full = (n // factor) * factor
    head = fn(x[..., :full].reshape(*x.shape[:-1], -1, factor), axis=-1)
    if full == n:
        return head
    tail = fn(x[..., full:], axis=-1)[..., None]
    return np.concatenate([head, tail], axis=-1)
