"""Plans composed of plans (``ctx.run``): stage directories, one device, relayed documents, resume."""

from __future__ import annotations

import h5py
import pytest

from spinlab.engine import Plan, RunEngine
from spinlab.engine.runfile import JOURNAL_FILE
from spinlab.errors import RunInterrupted
from spinlab.testing import Doubler, plan_lookup, steps_plan


def composed(fail_in_second=None, second_device=None):
    """Two stages of ``steps_plan`` (3 and 4 steps); the second raises RunInterrupted before
    step ``fail_in_second``, and runs on ``second_device`` if given."""

    def body(ctx):
        first = ctx.run(steps_plan(3), stage="first")
        second = ctx.run(
            steps_plan(4, fail_at=fail_in_second, exc=RunInterrupted(2)), second_device, stage="second"
        )
        ctx.result(total=first.summary["total"] + second.summary["total"])
        return {
            "paths": [str(first.path), str(second.path)],
            "total": first.summary["total"] + second.summary["total"],
        }

    return Plan("composed", {"fail_in_second": fail_in_second}, body)


#: what resume rebuilds the plans with (the composed plan without its failure)
PLANS = plan_lookup(composed=lambda **config: composed(), demo=steps_plan)


def test_stages_run_in_their_own_directories_on_the_composing_runs_device(tmp_path):
    docs = []
    device = Doubler()
    result = RunEngine(tmp_path).run(
        composed(), device, seed=5, subscribers=[lambda n, d: docs.append((n, d))]
    )
    first, second = (result.path / "stages" / name for name in ("1-first", "2-second"))
    assert result.summary["paths"] == [str(first), str(second)]
    for path, steps in ((first, 3), (second, 4)):
        with h5py.File(path / "run.h5") as f:
            assert f.attrs["status"] == "completed" and f.attrs["seed"] == 5
            assert f["response_V"].shape == (steps, 8)
    assert device.calls == 7
    assert device.outputs_off_calls == 3  # after each stage and after the composing run
    # the monitor sees one run: the stages' progress under its run id, labelled by stage
    assert {d["run_id"] for _, d in docs} == {result.run_id}
    assert [n for n, _ in docs].count("start") == 1 and [n for n, _ in docs].count("stop") == 1
    stages = [d["stage"] for n, d in docs if n == "progress"]
    assert stages == ["first: steps"] * 3 + ["second: steps"] * 4


def test_resuming_reads_completed_stages_back_and_resumes_the_interrupted_one(tmp_path):
    clean = RunEngine(tmp_path / "a").run(composed(), Doubler(), seed=2)
    device = Doubler()
    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path / "b").run(composed(fail_in_second=2), device, seed=2)
    path = caught.value.run_path
    assert path.parent == tmp_path / "b" and device.calls == 3 + 2
    assert device.outputs_off_calls == 3  # after the first stage, the interrupted one, the demo
    assert (path / "stages" / "2-second" / JOURNAL_FILE).is_file()
    again = Doubler()
    resumed = RunEngine(tmp_path / "b", plans=PLANS).resume(path, again)
    assert again.calls == 2  # the first stage is read back, the second continues from step 2
    assert resumed.status == "completed" and resumed.summary["total"] == clean.summary["total"]
    with h5py.File(path / "stages" / "2-second" / "run.h5") as f:
        assert f.attrs["status"] == "completed" and f.attrs["resumed"] == 1


def test_the_composing_run_opens_its_address_once_and_a_stage_address_for_that_stage(tmp_path):
    events = []

    class Tracked(Doubler):
        def __init__(self, address):
            super().__init__()
            self.address = address

        def close(self):
            events.append(("close", self.address))

    def opening(address, **options):
        events.append(("open", address))
        return Tracked(address)

    RunEngine(tmp_path, open_device=opening).run(composed(second_device="sim:other"), "bench:main")
    assert events == [
        ("open", "bench:main"),
        ("open", "sim:other"),
        ("close", "sim:other"),
        ("close", "bench:main"),
    ]


def test_a_remote_abort_during_a_stage_stops_the_stage_and_the_composing_run(tmp_path):
    from spinlab import RunAborted

    class AbortInSecondStage:
        """A control channel whose abort arrives once the second stage has written a step."""

        def service(self):
            if any(tmp_path.glob("*/stages/2-second/journal.spinlab")) and device.calls > 4:
                raise RunAborted("remote abort")

        def close(self):
            pass

    device = Doubler()
    with pytest.raises(RunAborted) as caught:
        RunEngine(tmp_path).run(composed(), device, control=lambda state: AbortInSecondStage())
    path = caught.value.run_path
    for run_file, status in (
        (path / "run.h5", "aborted"),
        (path / "stages" / "1-first" / "run.h5", "completed"),
        (path / "stages" / "2-second" / "run.h5", "aborted"),
    ):
        with h5py.File(run_file) as f:
            assert f.attrs["status"] == status
    assert device.calls == 5 and device.outputs_off_calls == 3
