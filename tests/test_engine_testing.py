"""spinlab.testing, the public test doubles: the Python-API page's example runs, and each double does
what its docstring says through the real engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spinlab.engine import RunEngine
from spinlab.errors import ConfigError
from spinlab.testing import BackgroundRun, DocumentRecorder, Doubler, plan_lookup, steps_plan

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_python_api_page_example_of_spinlab_testing_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    example = next(block for block in blocks if "from spinlab.testing import" in block)
    exec(compile(example, str(PAGE), "exec"), {"tmp_path": tmp_path})


def test_the_recorder_sees_every_document_in_order_and_counts_them(tmp_path):
    recorder = DocumentRecorder()
    RunEngine(tmp_path).run(steps_plan(2), Doubler(), subscribers=[recorder])
    assert recorder.names[:2] == ["opening", "start"] and recorder.names[-1] == "stop"
    assert recorder.counts == {
        "opening": 1,
        "start": 1,
        "descriptor": 1,
        "event": 2,
        "progress": 2,
        "dataset": 1,
        "result": 1,
        "stop": 1,
    }
    start = recorder.of("start")[0]
    assert start["plan"] == "demo" and "started" in start and "address" in start


def test_an_injected_device_opener_opens_the_address_and_an_unknown_plan_is_named(tmp_path):
    opened = []

    def open_device(address, **options):
        opened.append(address)
        return Doubler()

    result = RunEngine(tmp_path, open_device=open_device).run(steps_plan(1), "test:doubler")
    assert result.status == "completed" and opened == ["test:doubler"]
    with pytest.raises(ConfigError, match="no plan named 'other'; known plans: demo"):
        plan_lookup(demo=steps_plan)("other")


def test_a_background_run_reports_its_steps_and_its_end(tmp_path):
    run = BackgroundRun(tmp_path, Doubler(), max_steps=3)
    run.thread.join(10)
    assert run.steps_done == 3 and run.error is None and run.result.summary == {"steps": 3}


def test_resume_reopens_the_recorded_address_through_the_injected_opener(tmp_path):
    from spinlab.errors import RunInterrupted, run_path

    opened = []

    def open_device(address, **options):
        opened.append(address)
        device = Doubler()
        device.address = address  # what the start document records, and resume opens again
        return device

    engine = RunEngine(tmp_path, plans=plan_lookup(demo=steps_plan), open_device=open_device)
    with pytest.raises(RunInterrupted) as caught:
        engine.run(steps_plan(4, fail_at=2, exc=RunInterrupted(2)), "test:doubler")
    assert engine.resume(run_path(caught.value)).status == "completed"
    assert opened == ["test:doubler", "test:doubler"]
