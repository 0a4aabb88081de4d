"""Bluesky-compatible documents and the Tiled server (issue 25 item 4): a characterize run's
event-model documents, live and exported, validate against event-model's schemas and route
through a ``DocumentRouter``; their StreamDatum rows are the traces in run.h5; a Tiled client
reads a trace through ``spinlab runs serve`` (a subprocess) with the API key, and nothing
without it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import event_model
import h5py
import httpx
import numpy as np
import pytest
from tcp_helpers import CLI
from typer.testing import CliRunner

import spinlab
from spinlab.bluesky import BlueskyForwarder, documents, run_uid
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.protocols import characterize

SMALL_CHARACTERIZE = {"bias_points": 6, "step_repeats": 64, "step_batches": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small characterize run on sim:vortex, its live event-model documents and its runs folder."""
    runs_dir = tmp_path_factory.mktemp("bluesky") / "runs"
    live: list[tuple[str, dict]] = []
    old = os.environ.pop("SPINLAB_CATALOG", None)
    try:
        result = RunEngine(runs_dir).run(
            characterize.plan(**SMALL_CHARACTERIZE),
            "sim:vortex",
            seed=2,
            subscribers=[BlueskyForwarder(lambda name, doc: live.append((name, doc)), validate=True)],
        )
    finally:
        if old is not None:
            os.environ["SPINLAB_CATALOG"] = old
    return result, live, runs_dir


class Counted(event_model.DocumentRouter):
    """A Bluesky callback: counts what it is routed and checks each piece belongs to the run."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, int] = {}
        self.start_uid = None
        self.descriptors: set[str] = set()

    def _count(self, name):
        self.seen[name] = self.seen.get(name, 0) + 1

    def start(self, doc):
        self._count("start")
        self.start_uid = doc["uid"]

    def descriptor(self, doc):
        self._count("descriptor")
        assert doc["run_start"] == self.start_uid
        self.descriptors.add(doc["uid"])

    def event_page(self, doc):
        self._count("event_page")
        assert doc["descriptor"] in self.descriptors

    def stream_resource(self, doc):
        self._count("stream_resource")
        assert doc["run_start"] == self.start_uid

    def stream_datum(self, doc):
        self._count("stream_datum")
        assert doc["descriptor"] in self.descriptors

    def stop(self, doc):
        self._count("stop")
        assert doc["run_start"] == self.start_uid


def test_a_characterize_runs_documents_validate_against_event_models_schemas_live_and_exported(run):
    result, live, _ = run
    exported = list(documents(result.path))
    for docs in (live, exported):
        for name, doc in docs:
            event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
        router = Counted()
        for name, doc in docs:
            router(name, doc)
        assert router.seen == {
            "start": 1,
            "descriptor": 2,  # the streams sweep and steps
            "stream_resource": 2,  # sweep/responses and steps/batch_sum_V stay in run.h5
            "stream_datum": 8,  # one per step
            "event_page": 8,
            "stop": 1,
        }
    assert [n for n, _ in exported] == [n for n, _ in live]
    start, stop = live[0][1], live[-1][1]
    assert start["uid"] == exported[0][1]["uid"] == run_uid(result.run_id)
    assert start["plan_name"] == "characterize" and start["plan_args"]["bias_points"] == 6
    assert stop["exit_status"] == "success" and stop["num_events"] == {"sweep": 6, "steps": 2}
    assert stop["results"]["threshold_A"] == result.summary["threshold_A"]

    sweep = next(d for n, d in live if n == "descriptor" and d["name"] == "sweep")
    assert sweep["data_keys"]["responses"]["external"] == "STREAM:"
    assert sweep["data_keys"]["responses"]["units"] == "V" and sweep["data_keys"]["bias_A"]["units"] == "A"
    # the StreamDatum rows are the run file's trace rows, the inline biases the recorded ones
    resource = next(d for n, d in live if n == "stream_resource" and d["data_key"] == "responses")
    datums = [d for n, d in live if n == "stream_datum" and d["stream_resource"] == resource["uid"]]
    assert [(d["indices"]["start"], d["indices"]["stop"]) for d in datums] == [(i, i + 1) for i in range(6)]
    opened = spinlab.open_run(result.path)
    with h5py.File(resource["uri"].removeprefix("file://"), "r") as file:
        trace = file[resource["parameters"]["dataset"]][datums[3]["indices"]["start"]]
    np.testing.assert_array_equal(trace, opened.data["sweep"].responses.values[3])
    pages = [d for n, d in live if n == "event_page" and d["descriptor"] == sweep["uid"]]
    biases = [b for p in pages for b in p["data"]["bias_A"]]
    np.testing.assert_allclose(biases, opened.data["sweep"].bias_A.values)


def test_runs_export_format_bluesky_writes_json_lines_of_name_and_document(run, tmp_path):
    result, live, runs_dir = run
    out = tmp_path / "run.jsonl"
    cli = CliRunner().invoke(
        app,
        [
            "runs",
            "export",
            result.run_id,
            "--format",
            "bluesky",
            "--out",
            str(out),
            "--runs-dir",
            str(runs_dir),
        ],
    )
    assert cli.exit_code == 0, cli.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [name for name, _ in lines] == [name for name, _ in live]
    for name, doc in lines:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tiled_client_reads_a_trace_of_the_run_through_spinlab_runs_serve(run):
    from tiled.client import from_uri

    result, _, runs_dir = run
    port, key = _free_port(), "k3y" + "0" * 29
    env = {**os.environ, "SPINLAB_TILED_API_KEY": key}
    env.pop("SPINLAB_CATALOG", None)
    server = subprocess.Popen(
        [*CLI, "runs", "serve", "--runs-dir", str(runs_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "spinlab runs serve did not answer in 60 s"
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/v1/metadata/{result.run_id}").status_code == 401  # no key, no data
        client = from_uri(url, api_key=key)
        assert result.run_id in list(client)
        node = client[result.run_id]
        assert node.metadata["plan"] == "characterize"
        assert node.metadata["results"]["threshold_A"] == result.summary["threshold_A"]
        trace = node["sweep"]["responses"][2]
        np.testing.assert_array_equal(trace, spinlab.open_run(result.path).data["sweep"].responses.values[2])
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serve_refuses_a_key_that_is_not_letters_and_digits_in_one_line(run):
    _, _, runs_dir = run
    cli = CliRunner().invoke(app, ["runs", "serve", "--runs-dir", str(runs_dir), "--api-key", "not a key!"])
    assert cli.exit_code != 0
    assert cli.output.strip().count("\n") == 0 and "letters and digits" in cli.output
