"""The web monitor in a real browser: headless Chromium (Debian's `chromium` package, driven by
playwright without any browser download) watches runs through `spinlab monitor --web`.

Skips, saying why, where Chromium or playwright is missing (`apt-get install -y chromium`;
`SPINLAB_CHROMIUM=/path/to/chromium` picks another build)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from web_helpers import BridgeThread, SteeredRun, controlled_run, free_port, keys, wait_for  # noqa: F401 (keys: fixture)

import spinlab
from spinlab import RunAborted, Waveform
from spinlab.monitoring import ControlClient

CHROMIUM = os.environ.get("SPINLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Chromium logs these as errors, and some tests mean them: refused control requests, and the
#: WebSocket retrying while the server is away (the page reconnects by itself).
EXPECTED = re.compile(
    r"Failed to load resource: the server responded with a status of 40[13]"
    r"|WebSocket connection to '\S+' failed"
)
SPINLAB = [sys.executable, "-c", "from spinlab.cli import main; main()"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found: `apt-get install -y chromium` (or set SPINLAB_CHROMIUM)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 1100},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
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


def text(page, selector: str) -> str:
    return page.text_content(selector) or ""


def wait_text(page, selector: str, expected: str, timeout_s: float = 30.0) -> None:
    try:
        page.wait_for_function(
            "([sel, want]) => document.querySelector(sel)?.textContent === want",
            arg=[selector, expected],
            timeout=timeout_s * 1000,
        )
    except Exception as exc:  # say what the page showed instead
        shown = {s: text(page, s) for s in (selector, "#conn", "#control-reply", "#progress-text")}
        raise AssertionError(f"{selector} never read {expected!r}; the page showed {shown}") from exc


@pytest.mark.slow  # ~20 s: two commands start, and the run must last long enough to be seen mid-run
def test_the_page_follows_a_characterize_run_to_completed(page, tmp_path):
    """The run and the watcher are the user's commands; the page shows the run's progress mid-run
    (screenshot saved in the run directory), then `completed` with the run's threshold current."""
    monitor = f"tcp://127.0.0.1:{free_port()}"
    bridge = subprocess.Popen(
        [*SPINLAB, "monitor", monitor, "--web", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = None
    try:
        url = bridge.stdout.readline().split()[3]
        page.goto(url)
        page.wait_for_selector('#conn[data-state="live"]')
        assert text(page, "#status") == "waiting"
        run = subprocess.Popen(
            [
                *SPINLAB,
                "characterize",
                "--device",
                "sim:vortex",
                "--json",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--monitor",
                monitor,
                "--step-repeats",
                "300000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        # mid-run: in the step-response stage, both previews plotted, an ETA from its rate so far
        page.wait_for_function(
            "() => document.getElementById('progress-fields').textContent.includes('step response')"
            " && document.getElementById('eta').textContent.startsWith('ETA ')"
            " && document.querySelectorAll('#waveforms canvas').length >= 2",
            timeout=60_000,
        )
        mid = {
            key: text(page, f"#{key}") for key in ("status", "progress-text", "eta", "run-kind", "run-device")
        }
        run_dir = Path(text(page, "#run-path"))
        shot = run_dir / "web-monitor.png"
        page.screenshot(path=str(shot), full_page=True)
        assert mid["status"] == "running", "the run ended before the page could be seen mid-run"
        done, total = (int(v) for v in mid["progress-text"].split(" (")[0].split(" / "))
        assert 0 < done < total == 16 and mid["eta"].startswith("ETA ")  # 16 step batches
        assert mid["run-kind"] == "characterize" and mid["run-device"] == "sim:vortex"

        wait_text(page, "#status", "completed", timeout_s=60)
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0
        summary = json.loads(out.splitlines()[-1])
        shown = page.get_attribute('#results tr[data-key="threshold_A"] td', "data-value")
        assert float(shown) == summary["threshold_A"]
        assert text(page, '#results tr[data-key="threshold_A"] td').endswith(" mA")
        assert Path(summary["run_dir"]) == run_dir and shot.stat().st_size > 20_000
        # the last phase is the run's figures, drawn after the step batches (one per figure)
        assert "figures" in text(page, "#progress-fields")
        assert text(page, "#progress-text") == "2 / 2 (100 %)" and text(page, "#eta") == ""
        assert text(page, "#stat-missed") == "0" and text(page, "#stat-dropped") == "0"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        bridge.terminate()
        bridge.communicate(timeout=10)


def test_the_page_reconnects_by_itself_and_gets_the_state_again(page, tmp_path):
    run = SteeredRun(tmp_path)
    run.do(
        lambda ctx: (
            ctx.progress(3, 10),
            ctx.preview("response", Waveform(np.sin(np.linspace(0, 30, 20_000)), 1e-8)),
        )
    )
    assert wait_for(lambda: run.sent() >= 3)
    bridge = BridgeThread(run.endpoint)  # joins late: the state comes from the cache
    try:
        page.goto(bridge.url)
        wait_text(page, "#progress-text", "3 / 10 (30 %)")
        assert text(page, "#status") == "running" and page.locator("#waveforms canvas").count() == 1
        port = bridge.bridge.port
        bridge.close()  # the server goes away mid-run...
        page.wait_for_selector('#conn[data-state="reconnecting"]')
        run.do(lambda ctx: ctx.progress(6, 10))
        bridge = BridgeThread(run.endpoint, port=port)  # ...and comes back
        wait_text(page, "#progress-text", "6 / 10 (60 %)")
        assert page.get_attribute("#conn", "data-state") == "live"
        run.do(lambda ctx: ctx.result(recordings=6))
        run.finish()
        wait_text(page, "#status", "completed")
        assert text(page, '#results tr[data-key="recordings"] td') == "6"
    finally:
        run.finish()
        bridge.close()


def test_the_page_controls_the_run_only_with_the_token(page, tmp_path, keys):
    device = spinlab.open_device("bench:emulated")
    run = controlled_run(tmp_path, device, keys)
    client = ControlClient(run.endpoint, keys["client_secret"], keys["server_public"])
    bridge = BridgeThread(run.monitor, control=client)
    try:
        page.goto(bridge.url)  # without the link's token: the buttons are refused
        page.wait_for_selector("#control-section:not([hidden])")
        page.click("#pause")
        page.wait_for_selector('#control-reply[data-ok="false"]')
        assert "401" in text(page, "#control-reply")
        page.fill("#token", "not-the-token")
        page.click("#pause")
        page.wait_for_function("() => document.getElementById('control-reply').textContent.includes('403')")
        before = run.steps_done
        assert run.wait_steps(before + 5), "refused requests must not disturb the run"

        page.goto(f"{bridge.url}#token={bridge.bridge.token}")  # the link printed at start-up
        page.wait_for_selector("#control-section:not([hidden])")
        assert page.evaluate("location.hash") == ""  # the token leaves the address bar
        page.click("#pause")
        wait_text(page, "#status", "paused")
        held = run.steps_done
        time.sleep(0.3)
        assert run.steps_done == held
        page.click("#resume")
        wait_text(page, "#status", "running")
        assert run.wait_steps(held + 3)
        page.click("#abort")
        assert text(page, "#abort") == "Click again to abort" and run.thread.is_alive()
        page.click("#abort")
        wait_text(page, "#status", "aborted")
        run.thread.join(10)
        assert isinstance(run.error, RunAborted) and run.bias_seen_on
        assert not device.lab.source.output_on and not device.lab.awg.output_on
    finally:
        bridge.close()
        if run.thread.is_alive():
            client.request("abort")
            run.thread.join(10)
        run.publisher.close()


@pytest.mark.slow  # ~30 s: two commands start, and the emulated bench takes seconds to open
def test_a_page_opened_while_the_bench_opens_shows_the_run_at_once(page, tmp_path):
    """Issue 24 item 2 as the user ran it: the monitor, then a run on the emulated bench, and the
    page opened as soon as the run's first message is in. It used to show "waiting for a run"
    until the bench was open (the stream had only stats with no run id); now the run, opening."""
    monitor = f"tcp://127.0.0.1:{free_port()}"
    bridge = subprocess.Popen(
        [*SPINLAB, "monitor", monitor, "--web", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = None
    try:
        url = bridge.stdout.readline().split()[3]
        run = subprocess.Popen(
            [
                *SPINLAB,
                "characterize",
                "--device",
                "bench:emulated",
                "--json",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--monitor",
                monitor,
                "--step-repeats",
                "2000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

        def first_state():
            with urllib.request.urlopen(url + "api/state", timeout=5) as response:
                state = json.loads(response.read())
            return state if state["stats"]["stream"]["received"] else None

        state = wait_for(first_state, 60)
        assert state is not None, "the run never published"
        page.goto(url)
        page.wait_for_function("() => document.getElementById('stat-messages').textContent !== '0'")
        first = {key: text(page, f"#{key}") for key in ("run-id", "status", "run-kind", "run-device")}
        assert state["run"] and first["run-id"] == state["run"], (first, state["messages"])
        assert first["status"] in ("opening", "running") and first["run-kind"] == "characterize"
        assert first["run-device"].startswith("bench:emulated")
        wait_text(page, "#status", "completed", timeout_s=180)
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0 and Path(json.loads(out.splitlines()[-1])["run_dir"]).name == state["run"]
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        bridge.terminate()
        bridge.communicate(timeout=10)
