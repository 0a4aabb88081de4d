"""The run engine: documents, the run file, exit statuses, durability and resume."""

from __future__ import annotations

import collections
import json

import h5py
import numpy as np
import pytest

from spinlab import RunAborted
from spinlab.engine import Plan, RunEngine, build_plan, journal, plan_names, seed_stream
from spinlab.engine.runfile import JOURNAL_FILE
from spinlab.errors import ConfigError, RunInterrupted
from spinlab.testing import Doubler, plan_lookup, steps_plan


def test_completed_run_file_holds_config_data_results_and_versions(tmp_path):
    docs = []
    device = Doubler()
    result = RunEngine(tmp_path).run(
        steps_plan(), device, seed=7, subscribers=[lambda name, doc: docs.append(name)]
    )
    assert result.status == "completed" and result.events == 5
    counts = collections.Counter(docs)
    assert counts == {
        "opening": 1,
        "start": 1,
        "descriptor": 1,
        "event": 5,
        "progress": 5,
        "dataset": 1,
        "result": 1,
        "stop": 1,
    }
    assert docs[:2] == ["opening", "start"] and docs[-1] == "stop"
    with h5py.File(result.run_file) as f:
        assert f.attrs["status"] == "completed"
        assert json.loads(f.attrs["config"]) == {"n": 5}
        assert f.attrs["seed"] == 7
        assert json.loads(f.attrs["results"]) == {"total": result.summary["total"]}
        assert "numpy" in json.loads(f.attrs["versions"])
        assert f["drive_V"].shape == (5, 8) and f["drive_V"].attrs["dt_s"] == 1e-9
        assert f["final"].attrs["dt_s"] == 1e-9 and f["final"].attrs["note"] == "x"
        assert len(f["engine/events"]) == 5
        assert f.attrs["default"] == "entry" and f["entry/data"].attrs["signal"] == "response_V"
        np.testing.assert_array_equal(f["entry/data/response_V"][()], f["response_V"][()])
    assert not (result.path / JOURNAL_FILE).exists()  # a completed run needs no journal
    assert device.outputs_off_calls == 1  # outputs off on a normal return too


@pytest.mark.parametrize(
    "exc, status",
    [
        (RunAborted("remote abort"), "aborted"),
        (RunInterrupted(15), "interrupted"),
        (RuntimeError("boom"), "failed"),
    ],
)
def test_a_stopped_run_keeps_its_steps_switches_outputs_off_and_says_why(tmp_path, exc, status):
    device = Doubler()
    with pytest.raises(type(exc)) as caught:
        RunEngine(tmp_path).run(steps_plan(5, fail_at=3, exc=exc), device)
    path = caught.value.run_path
    assert device.outputs_off_calls == 1
    with h5py.File(path / "run.h5") as f:
        assert f.attrs["status"] == status
        assert f["response_V"].shape == (3, 8)
    assert (path / JOURNAL_FILE).exists()  # kept: the run can be resumed


def test_resume_completes_a_stopped_run_to_the_rows_of_an_uninterrupted_one(tmp_path):
    clean = RunEngine(tmp_path / "a").run(steps_plan(6), Doubler(), seed=4)
    device = Doubler()
    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path / "b").run(steps_plan(6, fail_at=4, exc=RunInterrupted(2)), device, seed=4)
    assert device.calls == 4
    again = Doubler()
    engine = RunEngine(tmp_path / "b", plans=plan_lookup(demo=steps_plan))
    resumed = engine.resume(caught.value.run_path, again)
    assert again.calls == 2  # only the missing steps ran
    assert resumed.status == "completed" and resumed.summary == clean.summary
    with h5py.File(clean.run_file) as a, h5py.File(resumed.run_file) as b:
        np.testing.assert_array_equal(a["response_V"][()], b["response_V"][()])
        assert b.attrs["resumed"] == 1 and b.attrs["status"] == "completed"


def test_resume_rebuilds_a_damaged_run_file_from_the_journal(tmp_path):
    with pytest.raises(RuntimeError) as caught:
        RunEngine(tmp_path).run(steps_plan(4, fail_at=2, exc=RuntimeError("cable")), Doubler())
    path = caught.value.run_path
    (path / "run.h5").write_bytes(b"\0" * 64)  # as if the writer had died inside a write
    with open(path / JOURNAL_FILE, "ab") as fh:
        fh.write(b"REC1\x10\x00")  # and a torn record at the end of the journal
    resumed = RunEngine(tmp_path, plans=plan_lookup(demo=steps_plan)).resume(path, Doubler())
    with h5py.File(resumed.run_file) as f:
        assert f["response_V"].shape == (4, 8) and f.attrs["status"] == "completed"


def test_resume_refuses_a_plan_that_asks_for_other_steps(tmp_path):
    with pytest.raises(RuntimeError) as caught:
        RunEngine(tmp_path).run(steps_plan(4, fail_at=2, exc=RuntimeError("x")), Doubler())

    def other(n=4):
        plan = steps_plan(n)
        original = plan.body

        def body(ctx):
            ctx.measure("steps", lambda dev: {"response_V": np.zeros((1, 8))}, key="different")
            return original(ctx)

        return Plan(plan.name, plan.config, body)

    with pytest.raises(ConfigError, match="not deterministic"):
        RunEngine(tmp_path, plans=plan_lookup(demo=other)).resume(caught.value.run_path, Doubler())


def test_journal_reads_up_to_a_torn_or_corrupt_record(tmp_path):
    path = tmp_path / "j"
    j = journal.Journal(path)
    for i in range(3):
        j.append({"doc": "event", "seq": i, "data": {"x": np.full((2, 2), i, dtype=np.float32)}})
    j.close()
    raw = bytearray(path.read_bytes())
    assert [r["seq"] for r in journal.read(path)] == [0, 1, 2]
    np.testing.assert_array_equal(journal.read(path)[2]["data"]["x"], np.full((2, 2), 2, np.float32))
    raw[-3] ^= 0xFF  # flip a bit in the last record
    path.write_bytes(bytes(raw))
    assert [r["seq"] for r in journal.read(path)] == [0, 1]
    j = journal.Journal(path)  # reopening truncates the damaged tail
    j.append({"doc": "event", "seq": 9})
    j.close()
    assert [r["seq"] for r in journal.read(path)] == [0, 1, 9]


def test_refuses_to_store_nan(tmp_path):
    def body(ctx):
        ctx.save("x", np.array([1.0, np.nan]))

    with pytest.raises(ValueError, match="non-finite"):
        RunEngine(tmp_path).run(Plan("demo", {}, body, needs_device=False))


def test_seed_streams_are_independent_and_order_free():
    a = seed_stream(3, "mask").integers(1 << 30, size=4)
    assert np.array_equal(a, seed_stream(3, "mask").integers(1 << 30, size=4))
    assert not np.array_equal(a, seed_stream(3, "split").integers(1 << 30, size=4))
    assert not np.array_equal(a, seed_stream(4, "mask").integers(1 << 30, size=4))


def test_protocols_are_registered_plans():
    assert {"characterize", "acquire", "spoken-digits", "twin-train", "twin-eval"} <= set(plan_names())
    plan = build_plan("characterize", {"bias_points": 8})
    assert plan.name == "characterize" and plan.config.bias_points == 8
    with pytest.raises(ConfigError, match="no setting"):
        build_plan("characterize", {"bias_pionts": 8})
    with pytest.raises(ConfigError, match="no plan named"):
        build_plan("characterise")


def test_a_plan_that_needs_a_device_is_refused_without_one(tmp_path):
    with pytest.raises(ConfigError, match="needs a device"):
        RunEngine(tmp_path).run(steps_plan())
    assert not any(tmp_path.iterdir())  # refused before a run directory was made


def test_the_journal_and_the_wire_share_one_array_codec(tmp_path):
    """One allow-list: numbers on both (big-endian arrives little-endian), fixed-width text in the
    journal only, objects nowhere."""
    from spinlab.engine.arrays import ARRAY_DTYPES
    from spinlab.monitoring.messages import ProtocolError, decode, encode

    big = np.arange(6, dtype=">f8").reshape(2, 3)
    j = journal.Journal(tmp_path / "j")
    j.append({"doc": "dataset", "x": big, "labels": np.array(["one", "two"])})
    j.close()
    (record,) = journal.read(tmp_path / "j")
    wire = decode(encode("preview", "r", 0, 0.0, {}, {"x": big}))
    for arr in (record["x"], wire.arrays["x"]):
        assert arr.dtype.str == "<f8" and arr.dtype.str in ARRAY_DTYPES
        np.testing.assert_array_equal(arr, big)
    assert list(record["labels"]) == ["one", "two"]
    with pytest.raises(ProtocolError, match="only numeric dtypes"):
        encode("preview", "r", 0, 0.0, {}, {"labels": np.array(["one"])})
    with pytest.raises(TypeError, match="cannot journal an array"):
        journal.encode({"x": np.array([object()], dtype=object)})
