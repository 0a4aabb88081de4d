"""Fuzzing the monitoring wire: both ends of the codec, the subscriber, the control channel's
request and reply parsers, recordings, and the `spinlab monitor` view.

The rule: hostile input ends in :class:`~spinlab.monitoring.MessageFormatError` or is
accepted, and everything :func:`~spinlab.monitoring.messages.decode` accepts can be folded into
the view, rendered and printed as a JSON line. Any other exception is a bug in spinlab.

By default each target runs a few hundred derandomised examples (hypothesis profile ``ci``, see
``tests/conftest.py``). A long random campaign::

    SPINLAB_FUZZ_PROFILE=fuzz SPINLAB_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_monitoring.py

or, for every fuzz module at once, ``.venv/bin/python -m pytest -m slow tests/test_fuzz_100k.py``.
"""

from __future__ import annotations

import io
import json

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from rich.console import Console

from spinlab.errors import MessageFormatError
from spinlab.monitoring import Publisher, Subscriber, messages
from spinlab.monitoring.control import COMMANDS, ControlError, parse_reply, parse_request
from spinlab.monitoring.messages import ARRAY_DTYPES, TOPICS, decode, encode
from spinlab.monitoring.recording import MAGIC, read_recording
from spinlab.monitoring.view import MonitorState, message_to_json, render

# --- strategies ------------------------------------------------------------------------------
#: Text that rich would take for markup or a terminal for control sequences, among any text.
hostile_text = st.text(max_size=12) | st.sampled_from(
    ["[/]", "[bold", "[/x]", "[red]a[/blue]", "\x1b[2J", "\r\n", "[link=file:///etc]x", "\\[", "\ud7ff"]
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | hostile_text
    | st.binary(max_size=12)
)
plain = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=16,
)
#: Payload keys the view reads, so the generated values reach every branch of MonitorState.
VIEW_KEYS = [
    "name",
    "kind",
    "config",
    "status",
    "results",
    "dropped",
    "done",
    "total",
    "loss",
    "nrmse",
    "type",
    "message",
    "level",
    "logger",
    "state",
    "unit",
    "step",
]


def nested(depth: int, leaf=0):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


deep = st.integers(0, 40).map(nested)
payloads = st.dictionaries(st.sampled_from(VIEW_KEYS) | hostile_text, plain | deep, max_size=6)
#: Values msgpack can carry that a payload may not: extension types, timestamps included.
extensions = st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)) | st.builds(
    msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)
)
topics = st.sampled_from(sorted(TOPICS)) | st.from_regex(r"\A[a-z][a-z0-9_]{0,10}(\.[a-z0-9_]{1,8}){0,2}\Z")


@st.composite
def array_frames(draw):
    """One array: its header spec and its bytes, consistent (an empty axis may be huge)."""
    dtype = np.dtype(draw(st.sampled_from(sorted(ARRAY_DTYPES))))
    shape = draw(
        st.lists(st.integers(0, 6), max_size=3)
        | st.lists(st.integers(0, 2**20), max_size=3).map(lambda s: [*s, 0])
    )
    data = draw(
        st.binary(
            min_size=dtype.itemsize * int(np.prod(shape)), max_size=dtype.itemsize * int(np.prod(shape))
        )
    )
    name = draw(st.sampled_from(["samples", "x"]) | hostile_text)
    return {"name": name, "dtype": dtype.str, "shape": shape}, data


@st.composite
def valid_frames(draw, payload=payloads):
    """Frames that follow the wire format (the payload may still break the payload rules)."""
    topic = draw(topics)
    arrays = draw(st.lists(array_frames(), max_size=3))
    header = {
        "v": 1,
        "topic": topic,
        "run": draw(st.sampled_from(["r", "r2"]) | hostile_text),
        "seq": draw(st.integers(0, 2**64 - 1)),
        "t": draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1)),
        "payload": draw(payload),
        "arrays": [spec for spec, _ in arrays],
    }
    if draw(st.booleans()):
        header["replay"] = draw(st.booleans())
    return [topic.encode(), msgpack.packb(header, use_bin_type=True), *(data for _, data in arrays)]


@st.composite
def hostile_frames(draw):
    """Valid frames with header fields replaced, bytes flipped, frames cut, dropped or added."""
    frames = draw(
        valid_frames(payload=payloads | st.dictionaries(st.text(max_size=4), extensions, max_size=2))
    )
    header = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
    for key in draw(st.lists(st.sampled_from([*header, "replay", "extra"]), max_size=3)):
        header[key] = draw(plain | extensions | deep)
    frames[1] = msgpack.packb(header, use_bin_type=True)
    index = draw(st.integers(0, len(frames) - 1))
    raw = bytearray(frames[index])
    for pos, byte in draw(
        st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=3)
    ):
        if raw:
            raw[pos] = byte
    frames[index] = bytes(raw[: draw(st.integers(0, len(raw)))]) if draw(st.booleans()) else bytes(raw)
    if draw(st.booleans()):
        frames = draw(st.permutations(frames))[: draw(st.integers(0, len(frames) + 1))]
    return frames + draw(st.lists(st.binary(max_size=16), max_size=2))


any_frames = hostile_frames() | valid_frames() | st.lists(st.binary(max_size=64), max_size=4)


def show(msgs):
    """What `spinlab monitor` does with accepted messages: fold, render, print JSON lines."""
    state = MonitorState()
    for msg in msgs:
        state.update(msg)
        json.dumps(message_to_json(msg), allow_nan=False)
        json.dumps(message_to_json(msg, max_array=0), allow_nan=False)
    Console(file=io.StringIO(), width=100).print(render(state, missed=1, rejected=2))


def decoded_or_none(frames):
    try:
        return decode(frames)
    except MessageFormatError:
        return None


# --- subscriber side ------------------------------------------------------------------------
@given(any_frames)
def test_decode_accepts_or_raises_protocol_error_and_the_view_shows_what_it_accepts(frames):
    msg = decoded_or_none(frames)
    if msg is not None:
        show([msg])


@given(st.lists(valid_frames(), min_size=1, max_size=6))
def test_the_view_survives_any_sequence_of_valid_messages(batch):
    show([m for m in map(decoded_or_none, batch) if m is not None])


@pytest.fixture(scope="module")
def subscriber():
    with Subscriber("tcp://127.0.0.1:9") as sub:  # nothing listens: frames are fed by hand
        yield sub


@given(frames=any_frames)
def test_subscriber_accept_counts_rejections_and_never_raises(subscriber, frames):
    rejected = subscriber.rejected
    msg = subscriber.accept(frames)
    assert (subscriber.rejected == rejected + 1) == (decoded_or_none(frames) is None)
    assert msg is None or isinstance(msg, messages.Message)


@given(
    st.binary(max_size=300)
    | st.lists(any_frames, max_size=4).flatmap(
        lambda batch: st.integers(0, 2**12).map(
            lambda cut: _recording(batch)[:cut] if cut else _recording(batch)
        )
    )
)
def test_read_recording_yields_valid_messages_or_raises_protocol_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rec") / "x.monrec"
    path.write_bytes(data)
    try:
        msgs = list(read_recording(path))
    except MessageFormatError:
        return
    show(msgs)


def _recording(batch) -> bytes:
    out = bytearray(MAGIC)
    for frames in batch:
        out += len(frames).to_bytes(4, "little")
        for frame in frames:
            out += len(frame).to_bytes(8, "little") + frame
    return bytes(out)


# --- publisher side -------------------------------------------------------------------------
#: What a protocol might hand to ``publish``: plain values, numpy values, tuples, sets, odd keys,
#: objects that are not data at all.
pythonish = st.recursive(
    leaves
    | st.builds(np.float32, st.floats(width=32))
    | st.builds(np.int64, st.integers(-(2**63), 2**63 - 1))
    | st.builds(complex, st.floats(), st.floats())
    | st.just(object())
    | st.just(np.bool_(True))
    | npst.arrays(
        st.sampled_from(["<f8", "<i4", "|b1", "<U3", "O"]), npst.array_shapes(min_dims=0, max_side=3)
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.binary(max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)
publish_arrays = st.dictionaries(
    hostile_text,
    npst.arrays(
        npst.scalar_dtypes() | npst.byte_string_dtypes() | st.just(np.dtype(">f8")),
        npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    )
    | st.lists(st.lists(st.floats(), max_size=3), max_size=3),
    max_size=3,
)


@pytest.fixture(scope="module")
def publisher():
    pub = Publisher("tcp://127.0.0.1:0", run_id="fuzz", stats_interval_s=60)
    yield pub
    pub.close()


@given(
    topic=topics,
    payload=st.dictionaries(st.text(max_size=4), pythonish | deep, max_size=4),
    arrays=publish_arrays,
)
def test_what_the_publisher_accepts_every_subscriber_accepts(publisher, topic, payload, arrays):
    try:
        frames = encode(topic, "run", 7, 1.5, payload, arrays)
    except MessageFormatError:
        with pytest.raises(MessageFormatError):
            publisher.publish(topic, payload, arrays)
        return
    publisher.publish(topic, payload, arrays)
    msg = decode([bytes(f) for f in frames])
    assert sorted(msg.arrays) == sorted(arrays)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(msg.arrays[name], np.asarray(arr))
    show([msg])


# --- control channel ------------------------------------------------------------------------
requests = st.dictionaries(
    st.sampled_from(["v", "command", "x"]) | st.text(max_size=3),
    plain | extensions | st.sampled_from([*COMMANDS, 1]),
    max_size=3,
)


@given(st.binary(max_size=64) | requests.map(lambda r: msgpack.packb(r, use_bin_type=True)))
def test_control_requests_parse_to_a_command_or_raise_protocol_error(body):
    try:
        command = parse_request(body)
    except MessageFormatError:
        return
    request = msgpack.unpackb(body)
    assert command in COMMANDS and request["command"] == command and request["v"] == 1


replies = st.dictionaries(
    st.sampled_from(["v", "ok", "command", "state", "status", "error"]) | st.text(max_size=3),
    plain
    | extensions
    | deep
    | st.dictionaries(st.sampled_from(["progress", "run_id"]), plain | deep, max_size=2),
    max_size=5,
)


@given(st.binary(max_size=64) | replies.map(lambda r: msgpack.packb(r, use_bin_type=True)))
def test_control_replies_parse_to_a_json_able_map_or_raise_control_error(body):
    try:
        reply = parse_reply(body, "tcp://127.0.0.1:5556")
    except ControlError:
        return
    assert isinstance(reply["ok"], bool) and isinstance(reply.get("status", {}).get("progress", {}), dict)
    json.dumps(reply)  # what `spinlab control --json` prints
