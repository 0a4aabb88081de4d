"""Wire format, previews, recordings and the monitor's view state (no sockets needed)."""

import json

import msgpack
import numpy as np
import pytest

from spinlab import Waveform
from spinlab.errors import MessageFormatError
from spinlab.monitoring import messages
from spinlab.monitoring.messages import decode, encode, preview
from spinlab.monitoring.recording import Recorder, read_recording
from spinlab.monitoring.view import MonitorState, message_to_json, render, sparkline


def roundtrip(topic="waveform", payload=None, arrays=None, seq=3):
    frames = encode(topic, "run-1", seq, 1234.5, payload or {}, arrays)
    return decode([bytes(f) for f in frames])


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<i2", "|u1", "<c16", "|b1"])
def test_numeric_arrays_roundtrip_with_dtype_and_shape(dtype):
    arr = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    msg = roundtrip(arrays={"a": arr}, payload={"name": "resp", "dt_s": 1e-7})
    assert msg.arrays["a"].dtype == np.dtype(dtype) and msg.arrays["a"].shape == (3, 4)
    np.testing.assert_array_equal(msg.arrays["a"], arr)
    assert (msg.topic, msg.run_id, msg.seq, msg.time_s) == ("waveform", "run-1", 3, 1234.5)
    assert msg.payload == {"name": "resp", "dt_s": 1e-7} and not msg.replay


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_copies():
    base = np.arange(20, dtype=">f8").reshape(4, 5)
    msg = roundtrip(arrays={"t": base.T})
    assert msg.arrays["t"].dtype.str == "<f8"
    np.testing.assert_array_equal(msg.arrays["t"], base.T)


@pytest.mark.parametrize(
    "bad", [np.array(["a", "b"]), np.array([object(), 1], dtype=object), np.zeros(2, dtype=[("x", "<f8")])]
)
def test_non_numeric_arrays_are_refused(bad):
    with pytest.raises(MessageFormatError, match="only numeric dtypes"):
        encode("waveform", "r", 0, 0.0, {}, {"bad": bad})


@pytest.mark.parametrize("topic", ["", "Progress", "a..b", "x y", "a" * 80, "run.stop\x00"])
def test_bad_topics_are_refused(topic):
    with pytest.raises(MessageFormatError):
        encode(topic, "r", 0, 0.0)


def test_unpackable_payloads_are_refused_not_pickled():
    with pytest.raises(MessageFormatError, match="cannot be packed"):
        encode("result", "r", 0, 0.0, {"obj": object()})


def header(**fields):
    base = {
        "v": 1,
        "topic": "progress",
        "run": "r",
        "seq": 0,
        "t": 1.0,
        "replay": False,
        "payload": {},
        "arrays": [],
    }
    base.update(fields)
    return msgpack.packb(base)


@pytest.mark.parametrize(
    "frames, match",
    [
        ([b"progress"], "at least 2 frames"),
        ([b"progress", b"\xc1"], "not valid msgpack"),
        ([b"progress", msgpack.packb([1, 2])], "must be a map"),
        ([b"progress", header(v=2)], "version"),
        ([b"progress", header(v=True)], "version"),
        ([b"waveform", header()], "disagrees"),
        ([b"progress", header(seq="7")], "'seq' must be int"),
        ([b"progress", header(seq=True)], "'seq' must be int"),
        ([b"progress", header(seq=-1)], ">= 0"),
        ([b"progress", header(payload=[1])], "'payload' must be dict"),
        (
            [b"progress", header(arrays=[{"name": "x", "dtype": "<f8", "shape": [2]}]), b"\0" * 16, b""],
            "lists 1 arrays but 2",
        ),
        (
            [b"progress", header(arrays=[{"name": "x", "dtype": "|O", "shape": [2]}]), b"\0" * 16],
            "not allowed",
        ),
        (
            [b"progress", header(arrays=[{"name": "x", "dtype": "<f8", "shape": [3]}]), b"\0" * 16],
            "do not match",
        ),
        ([b"progress", header(arrays=[{"name": "x", "dtype": "<f8", "shape": [-2]}]), b""], "bad shape"),
        ([b"\xff\xfe", header()], "UTF-8"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(frames, match):
    with pytest.raises(MessageFormatError, match=match):
        decode(frames)


def test_replay_marking_keeps_seq_and_time():
    frames = encode("progress", "r", 41, 99.0, {"done": 1, "total": 2})
    msg = decode([frames[0], messages.mark_replay(frames[1])])
    assert msg.replay and msg.seq == 41 and msg.time_s == 99.0


def test_minmax_preview_keeps_spikes_and_bounds_the_size():
    x = np.zeros(100_000)
    x[12_345] = 0.4
    x[77_777] = -0.3
    w = Waveform(x, 1e-9)
    small = preview(w, 1000)
    assert small.n == 1000
    assert small.samples.max() == 0.4 and small.samples.min() == -0.3
    assert small.meta["decimation"] == "minmax" and small.meta["factor"] == 100
    assert small.dt_s == pytest.approx(1e-7)
    assert preview(w, 1001).n <= 1001


def test_mean_preview_averages_bins_and_handles_ragged_tails_and_batches():
    x = np.arange(10.0)
    w = Waveform(np.stack([x, 2 * x]), 1.0)
    small = preview(w, 4, method="mean")
    np.testing.assert_allclose(small.samples, [[1, 4, 7, 9], [2, 8, 14, 18]])
    assert small.meta == {"decimation": "mean", "factor": 3}
    unchanged = preview(w, 10)
    np.testing.assert_array_equal(unchanged.samples, w.samples)
    with pytest.raises(ValueError, match="method"):
        preview(w, 4, method="median")


def test_recording_roundtrip_and_truncated_tail(tmp_path):
    path = tmp_path / "stream.monrec"
    with Recorder(path) as rec:
        for i in range(3):
            rec.write(encode("waveform", "r", i, float(i), {"name": "w"}, {"s": np.full(5, i, float)}))
    got = list(read_recording(path))
    assert [m.seq for m in got] == [0, 1, 2]
    np.testing.assert_array_equal(got[2].arrays["s"], np.full(5, 2.0))
    raw = path.read_bytes()
    (tmp_path / "cut.monrec").write_bytes(raw[:-7])  # e.g. Ctrl-C while writing
    assert [m.seq for m in read_recording(tmp_path / "cut.monrec")] == [0, 1]
    (tmp_path / "other.bin").write_bytes(b"not a recording")
    with pytest.raises(MessageFormatError, match="magic"):
        list(read_recording(tmp_path / "other.bin"))


def test_json_lines_carry_small_arrays_and_summarise_large_ones():
    small = roundtrip(arrays={"s": np.array([1.0, np.nan, 3.0])}, payload={"name": "w"})
    line = json.loads(json.dumps(message_to_json(small), allow_nan=False))
    assert line["arrays"]["s"] == {"dtype": "<f8", "shape": [3], "data": [1.0, None, 3.0]}
    assert line["topic"] == "waveform" and line["seq"] == 3
    big = roundtrip(arrays={"s": np.linspace(-1, 1, 10_000)})
    entry = message_to_json(big, max_array=100)["arrays"]["s"]
    assert entry["summarised"] and entry["min"] == -1.0 and entry["max"] == 1.0
    assert "data" not in entry


def test_sparkline_spans_the_block_range():
    line = sparkline(np.linspace(0, 1, 200), width=20)
    assert len(line) == 20 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([], 10) == "" and sparkline([2, 2, 2], 10) == "▁▁▁"


def test_view_state_follows_a_run_and_renders():
    state = MonitorState()

    def msg(topic, seq, payload, arrays=None):
        return roundtrip(topic, payload, arrays, seq)

    state.update(msg("start", 0, {"plan": "acquire", "config": {"steps": 3}}))
    state.update(msg("progress", 1, {"done": 2, "total": 3}))
    state.update(msg("preview", 2, {"name": "resp", "unit": "V"}, {"samples": np.sin(np.arange(50.0))}))
    for i, loss in enumerate([1.0, 0.5, 0.25]):
        state.update(msg("twin.loss", 3 + i, {"step": i, "loss": loss}))
    state.update(msg("error", 7, {"type": "InstrumentError", "message": "scope timeout"}))
    state.update(msg("stop", 8, {"status": "aborted", "results": {"acc": 0.9}, "monitor_dropped": 4}))
    assert state.kind == "acquire" and state.status == "aborted"
    assert state.progress == {"done": 2, "total": 3} and list(state.loss) == [1.0, 0.5, 0.25]
    assert state.results == {"acc": 0.9} and state.publisher_stats["dropped"] == 4
    from rich.console import Console

    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(render(state, missed=2, rejected=1))
    text = console.export_text()
    assert "acquire" in text and "2/3" in text and "scope timeout" in text
    assert "publisher dropped 4" in text and "missed here 2" in text


def test_minmax_preview_matches_a_per_bin_reference_for_batches_with_ragged_tails():
    x = np.random.default_rng(1).normal(size=(3, 10_007))
    small = preview(Waveform(x, 1.0), 300)
    factor = int(np.ceil(10_007 / 150))
    expected = []
    for row in x:
        pairs = []
        for start in range(0, x.shape[1], factor):
            seg = row[start : start + factor]
            i, j = int(seg.argmin()), int(seg.argmax())
            pairs += [seg[min(i, j)], seg[max(i, j)]]
        expected.append(pairs)
    np.testing.assert_array_equal(small.samples, np.array(expected))


def test_the_wire_error_keeps_its_old_name():
    from spinlab.errors import ProtocolError
    from spinlab.monitoring import ProtocolError as exported

    assert ProtocolError is MessageFormatError is exported
    with pytest.raises(ProtocolError):
        decode([b"not a header"])
