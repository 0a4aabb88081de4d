"""The web page as a lab notebook (issue 25 item 5): beside the live monitor, the same server
lists the catalog with filters, opens a run's summary and figures and compares runs, read-only
and on loopback; its JSON through HTTP here, the page itself in headless Chromium (``-m slow``).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
from test_web_monitor_browser import SPINLAB, browser, text  # noqa: F401 (browser: a fixture)
from web_helpers import BridgeThread, free_port

from spinlab.engine import RunEngine
from spinlab.testing import Doubler, steps_plan

# a 1x1 PNG, standing in for a plan's figure
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


#: a refused search is meant here (its 400 shows as a console error)
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of 400")


@pytest.fixture
def page(browser):  # noqa: F811
    """A fresh tab that fails the test on any script error (CSP violations included)."""
    tab = browser.new_page()
    problems = []
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.on(
        "console",
        lambda msg: msg.type == "error" and not EXPECTED.match(msg.text) and problems.append(msg.text),
    )
    yield tab
    tab.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def catalogued(tmp_path_factory):
    """Three runs in a runs folder's catalog: two plans, a tag and a figure."""
    mp = pytest.MonkeyPatch()
    mp.delenv("SPINLAB_CATALOG", raising=False)
    runs_dir = tmp_path_factory.mktemp("web-runs") / "runs"
    engine = RunEngine(runs_dir)
    a = engine.run(steps_plan(2), Doubler(), seed=1)
    b = engine.run(steps_plan(3), Doubler(), seed=1)
    c = engine.run(steps_plan(2, name="other"), Doubler(), seed=2)
    (a.path / "steps.png").write_bytes(PNG)
    from spinlab.catalog.store import Catalog

    Catalog.for_runs(runs_dir).tag(b.run_id, "good")
    yield runs_dir, a, b, c
    mp.undo()


@pytest.fixture
def server(catalogued):
    bridge = BridgeThread(f"tcp://127.0.0.1:{free_port()}", runs_dir=catalogued[0])
    yield bridge.url
    bridge.close()


def get(url: str) -> tuple[int, dict | bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            status = response.status
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, status, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in kind else body


def test_the_catalog_is_listed_filtered_opened_and_compared_over_http(server, catalogued):
    _, a, b, c = catalogued
    status, listed = get(server + "api/runs")
    assert status == 200 and [r["id"] for r in listed["runs"]] == [c.run_id, b.run_id, a.run_id]
    assert listed["results_shown"] == ["total"]
    assert [r["id"] for r in get(server + "api/runs?plan=demo")[1]["runs"]] == [b.run_id, a.run_id]
    assert [r["id"] for r in get(server + "api/runs?tag=good")[1]["runs"]] == [b.run_id]
    above = {r.run_id for r in (a, b, c) if r.summary["total"] > a.summary["total"]}
    found = get(server + "api/runs?where=" + quote(f"total>{a.summary['total']!r}"))[1]["runs"]
    assert {r["id"] for r in found} == above
    assert get(server + "api/runs?where=n%3D3&plan=demo")[1]["count"] == 1  # a config value

    status, summary = get(server + f"api/runs/{a.run_id}")
    assert status == 200 and summary["run"]["plan"] == "demo" and summary["figures"] == ["steps.png"]
    assert (
        summary["streams"]["steps"]["rows"] == 2
        and summary["streams"]["steps"]["variables"]["drive_V"] == "V"
    )
    assert get(server + f"api/runs/{a.run_id}/figures/steps.png") == (200, PNG)

    status, compared = get(server + f"api/compare?run={a.run_id}&run={b.run_id}")
    assert status == 200 and compared["differs"] == {"n": [2, 3]} and len(compared["results"]["total"]) == 2


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("api/runs?where=total%3E%3Ex", 400, "total>>x"),
        ("api/runs?colour=red", 400, "unknown filter 'colour'"),
        ("api/runs?limit=many", 400, "'many' is not a whole number"),
        ("api/runs/nope", 404, "no run 'nope' in the catalog"),
        ("api/runs/{a}/figures/..%2Frun.h5", 404, "has no figure"),
        ("api/runs/{a}/figures/run.h5", 404, "has no figure"),
        ("api/compare?run={a}", 400, "at least two runs"),
    ],
)
def test_bad_requests_get_one_line_and_nothing_outside_the_figures_is_served(
    server, catalogued, path, status, message
):
    got, body = get(server + path.format(a=catalogued[1].run_id))
    assert got == status and message in body["error"] and "\n" not in body["error"]


def test_without_a_runs_folder_the_monitor_says_how_to_get_one(catalogued):
    bridge = BridgeThread(f"tcp://127.0.0.1:{free_port()}")
    try:
        status, body = get(bridge.url + "api/runs")
        assert status == 404 and "--runs-dir" in body["error"]
    finally:
        bridge.close()


@pytest.mark.slow  # headless Chromium and two characterize runs: about 30 s
def test_the_run_list_in_chromium_filters_opens_a_run_with_its_figures_and_compares(page, tmp_path):
    runs_dir = tmp_path / "runs"
    for field in ("0", "0.3"):
        made = subprocess.run(
            [*SPINLAB, "characterize", "--device", "sim:vortex", "--runs-dir", str(runs_dir), "--json"]
            + ["--bias-points", "6", "--step-repeats", "64", "--step-batches", "1", "--field-T", field],
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
    engine = RunEngine(runs_dir)
    other = engine.run(steps_plan(2), Doubler(), seed=1)
    bridge = subprocess.Popen(
        [
            *SPINLAB,
            "monitor",
            f"tcp://127.0.0.1:{free_port()}",
            "--web",
            "127.0.0.1:0",
            "--runs-dir",
            str(runs_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = bridge.stdout.readline().split()[3]
        page.goto(url + "runs")
        page.wait_for_selector("#runs tbody tr")
        assert page.locator("#runs tbody tr").count() == 3
        page.fill("input[name=plan]", "characterize")
        page.fill("input[name=where]", "threshold_A>0")
        page.click("#filters button[type=submit]")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 2")
        assert other.run_id not in text(page, "#runs")
        assert "threshold_A" in text(page, "#runs thead")
        assert "plan=characterize" in page.url  # a search is bookmarkable

        first = page.locator("#runs tbody tr a").first
        run_id = first.text_content()
        first.click()
        page.wait_for_selector("#run-figures img")
        assert text(page, "#run-title") == run_id and "threshold_A" in text(page, "#run-results")
        assert "stream sweep: 6 rows" in text(page, "#run-streams")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#run-figures img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert sorted(page.eval_on_selector_all("#run-figures img", "els => els.map(e => e.alt)")) == [
            "step_response.png",
            "sweep.png",
        ]

        for box in page.locator("#runs tbody input[type=checkbox]").all():
            box.check()
        page.click("#compare-button")
        page.wait_for_selector("#compare tr.differs")
        assert text(page, "#compare-summary").startswith("config: 1 key(s) differ")
        assert "field_T" in text(page, "#compare tr.differs") and "threshold_A" in text(page, "#compare")
        page.screenshot(path=str(runs_dir / "web-runs.png"), full_page=True)

        page.fill("input[name=where]", "threshold_A>>1")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "threshold_A>>1" in text(page, "#error")
    finally:
        bridge.terminate()
        bridge.wait(timeout=20)
