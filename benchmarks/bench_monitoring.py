"""Does monitoring slow acquisition? The same sim:vortex acquisition with 0, 10 and 10 watchers
of which one has stopped reading, and through the web bridge (`spinlab monitor --web`) with one
browser attached, then with one browser and one stalled page.

Each step of a plan run by the engine: one batch of random drives through ``sim:vortex``,
recorded (journal + run file, durable per step) -> a waveform preview and progress. Subscribers are
separate processes on loopback (this file re-run with ``--subscriber``) that validate every
message with :class:`spinlab.monitoring.Subscriber`; the stalled one subscribes and never reads.
Scenarios are interleaved and repeated; we report medians of wall time and also of the
acquisition thread's own CPU time, which is what monitoring adds to the acquisition path
itself (wall time on a shared 2-core machine also counts CPU the watchers take from it).

Prints JSON lines: per scenario wall time of the acquisition loop, ratio to the 0-subscriber
run (target within 5 % of 1), ratio to a run without any monitor, data completeness (rows and
checksum of run.h5 against what was acquired), publisher drops, and what each watcher got.
On a small shared machine the watchers compete with acquisition for CPU; their CPU time is
reported so the ratio can be read honestly.

Web scenarios: the bridge is the real command in its own process; the browser is headless
Chromium driven by playwright in another (this file re-run with ``--browser URL``; where
Chromium or playwright is missing, a WebSocket client that reads every frame stands in, and the
output says so). The stalled page completes the WebSocket handshake with a tiny receive buffer
and never reads again; before timing starts, previews are published until its buffers are full
(what the bridge sends it stops growing), and the output says whether it stayed stalled. Reported
per web scenario: the CPU the bridge and the browser (all its processes) used while the loop
was timed, what the browser showed at the end, and per page what the bridge sent and skipped.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import h5py
import numpy as np


def subscriber_main(endpoint: str, stall: bool, timeout_s: float) -> None:
    """A watcher process: read and validate until stop, then print what it saw."""
    from spinlab.monitoring import Subscriber

    sub = Subscriber(endpoint)
    cpu0 = time.process_time()  # what reading costs, without interpreter start-up and imports
    if stall:  # subscribed, never reads: its buffers fill and the publisher must not care
        time.sleep(timeout_s)
        return
    got_stop, deadline = False, time.monotonic() + timeout_s
    while not got_stop and time.monotonic() < deadline:
        # like a live view: wake up ~10 times a second and take the whole batch
        time.sleep(0.1)
        got_stop = any(m.topic == "stop" for m in sub.drain())
    print(
        json.dumps(
            {
                "received": sub.received,
                "missed": sub.missed,
                "rejected": sub.rejected,
                "got_stop": got_stop,
                "cpu_s": round(time.process_time() - cpu0, 3),
            }
        ),
        flush=True,
    )
    sub.close()


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
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def browser_main(url: str, timeout_s: float) -> None:
    """A browser process: open the page, say "ready" when it is live, report what it showed once
    the run is over (or a WebSocket reader standing in where Chromium cannot be driven)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if CHROMIUM is None or sync_playwright is None:
        return ws_reader_main(url, timeout_s)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector('#conn[data-state="live"]', timeout=timeout_s * 1000)
        print("ready", flush=True)
        page.wait_for_function(
            "() => ['completed', 'failed', 'aborted'].includes("
            "document.getElementById('status').textContent)",
            timeout=timeout_s * 1000,
        )
        shown = {
            k: page.text_content(f"#{k}") for k in ("status", "progress-text", "stat-lost", "stat-messages")
        }
        print(
            json.dumps(
                {"engine": f"chromium {context.browser.version if context.browser else ''}".strip(), **shown}
            ),
            flush=True,
        )
        sys.stdin.readline()  # stay connected until the parent has read the bridge's counts
        context.close()


def ws_reader_main(url: str, timeout_s: float) -> None:
    import asyncio

    import aiohttp

    async def read() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(url + "ws") as ws:
            print("ready", flush=True)
            frames, status, progress, frame = 0, None, None, {}
            deadline = time.monotonic() + timeout_s
            while status is None and time.monotonic() < deadline:
                frame = await ws.receive_json(timeout=timeout_s)
                frames += 1
                for msg in frame.get("messages", []):
                    if msg["topic"] == "stop":
                        status = msg["payload"].get("status")
                    elif msg["topic"] == "progress":
                        progress = f"{msg['payload']['done']} / {msg['payload']['total']}"
            print(
                json.dumps(
                    {
                        "engine": "websocket reader (no Chromium)",
                        "status": status,
                        "progress-text": progress,
                        "frames": frames,
                        "stat-lost": frame.get("stats", {}).get("client", {}).get("lost"),
                    }
                ),
                flush=True,
            )
            await asyncio.to_thread(sys.stdin.readline)  # stay connected (see browser_main)

    asyncio.run(read())


class WebWatchers:
    """The web bridge (``spinlab monitor ENDPOINT --web``), one browser, optionally stalled pages."""

    def __init__(self, endpoint: str, stalled: int, timeout_s: float = 120.0) -> None:
        self.bridge = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from spinlab.cli import main; main()",
                "monitor",
                endpoint,
                "--web",
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.url = self.bridge.stdout.readline().split()[3]
        self.browser = subprocess.Popen(
            [sys.executable, __file__, "--browser", self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self.browser.stdout.readline().strip() == "ready", "the browser did not load the page"
        self.stalled = [stalled_page(self.url) for _ in range(stalled)]
        deadline = time.monotonic() + timeout_s
        while len(self.state()["pages"]) < 1 + stalled and time.monotonic() < deadline:
            time.sleep(0.05)

    def fill_stalled(self, publish, timeout_s: float = 60.0) -> list[int]:
        """Publish until the stalled pages' buffers are full: what the bridge has sent them stops
        growing while the browser still gets updates. Returns those counts."""
        last, steady_since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _ in range(20):
                publish()
            time.sleep(0.1)
            sent = sorted(p["sent"] for p in self.state()["pages"])[: len(self.stalled)]
            if sent != last:
                last, steady_since = sent, time.monotonic()
            elif time.monotonic() - steady_since > 1.0:
                return last
        raise RuntimeError("the stalled page never stalled")

    def cpu_s(self) -> float:
        return tree_cpu_s([self.bridge.pid, self.browser.pid])

    def state(self) -> dict:
        with urllib.request.urlopen(self.url + "api/state", timeout=10) as response:
            return json.load(response)

    def finish(self) -> dict:
        """What the browser showed after stop, and the bridge's per-page counts."""
        line = self.browser.stdout.readline()
        state = self.state()
        self.browser.communicate("\n", timeout=60)
        for sock in self.stalled:
            sock.close()
        self.bridge.terminate()
        self.bridge.communicate(timeout=30)
        shown = json.loads(line) if line.strip() else {"error": "no output"}
        return {
            "browser": shown,
            "pages": sorted(state["pages"], key=lambda p: -p["sent"]),
            "stream": state["stats"]["stream"],
        }


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their living descendants (Linux /proc):
    the bridge and the browser, whose renderer and GPU processes are grandchildren."""
    parent, used = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)], used[int(entry)] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, grew = set(pids), True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(used.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def stalled_page(url: str) -> socket.socket:
    """A page that completes the WebSocket handshake and then never reads (tiny receive window)."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101", "the bridge refused the WebSocket"
    return sock


def start_subscribers(endpoint: str, n: int, stalled: int) -> list[subprocess.Popen]:
    env = ENV
    procs = []
    for i in range(n):
        args = [sys.executable, __file__, "--subscriber", endpoint]
        if i < stalled:
            args.append("--stall")
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env))
    return procs


def acquisition(
    root: Path,
    steps: int,
    batch: int,
    samples: int,
    monitor: bool,
    n_subs: int,
    stalled: int,
    seed: int,
    web: bool = False,
) -> dict:
    import spinlab
    from spinlab.engine import Plan, RunEngine
    from spinlab.monitoring.documents import MonitorPublisher

    rng = np.random.default_rng(seed)
    drives = [spinlab.Waveform(rng.uniform(-0.3, 0.3, (batch, samples)), 100e-9) for _ in range(steps)]
    timing: dict[str, float] = {"checksum": 0.0, "publish_s": 0.0}
    watchers_web = None

    def body(ctx):
        if watchers_web is not None and stalled:  # before timing: the stalled page's buffers are full
            noise = np.random.default_rng(seed + 1)
            timing["stalled_sent"] = watchers_web.fill_stalled(
                lambda: ctx.preview("response", spinlab.Waveform(noise.uniform(-0.1, 0.1, samples), 100e-9))
            )
        web_cpu0 = watchers_web.cpu_s() if watchers_web is not None else 0.0
        t0, c0, p0_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for i, drive in enumerate(drives):
            data = ctx.measure(
                "responses", lambda dev, d=drive: {"responses": dev.respond(d, {"bias_A": 7.5e-3}).samples}
            )
            timing["checksum"] += float(data["responses"].sum())
            p0 = time.perf_counter()
            ctx.preview("response", spinlab.Waveform(data["responses"][0], drive.dt_s))
            ctx.progress(i + 1, steps)
            timing["publish_s"] += time.perf_counter() - p0
        timing["loop_s"] = time.perf_counter() - t0
        timing["thread_cpu_s"] = time.thread_time() - c0
        timing["process_cpu_s"] = time.process_time() - p0_cpu
        timing["web_cpu_s"] = watchers_web.cpu_s() - web_cpu0 if watchers_web is not None else 0.0
        timing["t_end"] = time.perf_counter()

    with spinlab.open_device(f"sim:vortex?seed={seed}") as dev:
        dev.respond(drives[0])  # compile the numba kernel outside the timing
        publisher = MonitorPublisher("tcp://127.0.0.1:0") if monitor else None
        procs = []
        if web:
            watchers_web = WebWatchers(publisher.endpoint, stalled)
        elif publisher is not None and n_subs:
            procs = start_subscribers(publisher.endpoint, n_subs, stalled)
            deadline = time.monotonic() + 60
            while publisher.publisher.stats()["subscriptions"] < n_subs and time.monotonic() < deadline:
                time.sleep(0.01)
        plan = Plan("bench-monitoring", {"steps": steps, "batch": batch, "samples": samples}, body)
        result = RunEngine(root).run(plan, dev, seed=seed, subscribers=[publisher] if publisher else [])
        close_s = time.perf_counter() - timing["t_end"]
        stats = publisher.publisher.stats() if publisher else {}
        if publisher is not None:
            publisher.close()
    watchers = []
    for proc in procs:
        if proc.args[-1] == "--stall":
            proc.kill()
            proc.wait()
            continue
        out, _ = proc.communicate(timeout=60)
        watchers.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": "no output"})
    web_seen = watchers_web.finish() if watchers_web is not None else None
    if "stalled_sent" in timing:  # did it stay stalled while the run was timed?
        web_seen["stalled_sent_before_timing"] = timing["stalled_sent"]
        web_seen["stalled_throughout"] = (
            sorted(p["sent"] for p in web_seen["pages"])[:stalled] == timing["stalled_sent"]
        )
    with h5py.File(result.run_file) as f:
        saved = f["responses"][()]
        status = f.attrs["status"]
    complete = saved.shape == (steps * batch, samples) and np.isclose(
        saved.sum(), timing["checksum"], rtol=1e-12
    )
    return {
        "loop_s": timing["loop_s"],
        "thread_cpu_s": timing["thread_cpu_s"],
        "process_cpu_s": timing["process_cpu_s"],
        "close_s": close_s,
        "publish_s": timing["publish_s"],
        "complete": bool(complete),
        "status": status,
        "rows": int(saved.shape[0]),
        "expected_rows": steps * batch,
        "dropped": stats.get("dropped", 0),
        "sent": stats.get("sent", 0),
        "published": stats.get("published", 0),
        "watchers": watchers,
        "web": web_seen,
        "web_cpu_s": timing["web_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriber", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--stall", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--browser", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--no-web", action="store_true", help="Skip the web-bridge scenarios.")
    parser.add_argument(
        "--only",
        help="Comma-separated scenario names to run (the references "
        "no_monitor and subscribers_0 always run).",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.subscriber:
        subscriber_main(args.subscriber, args.stall, timeout_s=120.0)
        return
    if args.browser:
        browser_main(args.browser, timeout_s=120.0)
        return

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    scenarios = {
        "no_monitor": dict(monitor=False, n_subs=0, stalled=0),
        "subscribers_0": dict(monitor=True, n_subs=0, stalled=0),
        f"subscribers_{args.subscribers}": dict(monitor=True, n_subs=args.subscribers, stalled=0),
        f"subscribers_{args.subscribers}_1_stalled": dict(monitor=True, n_subs=args.subscribers, stalled=1),
    }
    if not args.no_web:
        scenarios["web_1_browser"] = dict(monitor=True, n_subs=0, stalled=0, web=True)
        scenarios["web_1_browser_1_stalled"] = dict(monitor=True, n_subs=0, stalled=1, web=True)
    if args.only:
        wanted = {"no_monitor", "subscribers_0", *args.only.split(",")}
        scenarios = {name: kw for name, kw in scenarios.items() if name in wanted}
    results: dict[str, list[dict]] = {name: [] for name in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, kw in scenarios.items():  # interleaved so drift hits every scenario alike
                results[name].append(
                    acquisition(
                        Path(tmp) / f"{name}-{rep}",
                        args.steps,
                        args.batch,
                        args.samples,
                        seed=args.seed,
                        **kw,
                    )
                )

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base, bare = med("subscribers_0", "loop_s"), med("no_monitor", "loop_s")
    for name, runs in results.items():
        loop = med(name, "loop_s")
        watchers = [w for r in runs for w in r["watchers"]]
        print(
            json.dumps(
                {
                    "metric": "monitoring_overhead",
                    "scenario": name,
                    "steps": args.steps,
                    "batch": args.batch,
                    "samples": args.samples,
                    "repeats": args.repeats,
                    "loop_s_median": round(loop, 4),
                    "loop_s_all": [round(r["loop_s"], 4) for r in runs],
                    "ratio_vs_0_subscribers": round(loop / base, 4),
                    # each repeat against the reference run next to it: robust to a drifting machine load
                    "paired_ratio_vs_0_subscribers_median": round(
                        statistics.median(
                            r["loop_s"] / ref["loop_s"] for r, ref in zip(runs, results["subscribers_0"])
                        ),
                        4,
                    ),
                    "ratio_vs_no_monitor": round(loop / bare, 4),
                    "acq_thread_cpu_s_median": round(med(name, "thread_cpu_s"), 4),
                    "acq_thread_cpu_ratio_vs_0_subscribers": round(
                        med(name, "thread_cpu_s") / med("subscribers_0", "thread_cpu_s"), 4
                    ),
                    "process_cpu_s_median": round(med(name, "process_cpu_s"), 4),
                    "publish_s_median": round(statistics.median(r["publish_s"] for r in runs), 4),
                    "close_s_max": round(max(r["close_s"] for r in runs), 3),
                    "data_complete": all(r["complete"] for r in runs),
                    "rows": runs[-1]["rows"],
                    "expected_rows": runs[-1]["expected_rows"],
                    "publisher_published": sum(r["published"] for r in runs),
                    "publisher_dropped": sum(r["dropped"] for r in runs),
                    "watchers_reading": len(watchers),
                    "watchers_got_stop": sum(bool(w.get("got_stop")) for w in watchers),
                    "watcher_missed_total": sum(w.get("missed", 0) for w in watchers),
                    "watcher_rejected_total": sum(w.get("rejected", 0) for w in watchers),
                    "watcher_cpu_s_reading_total": round(sum(w.get("cpu_s", 0.0) for w in watchers), 2),
                    **(
                        {
                            "web_cpu_s_during_loop_median": round(med(name, "web_cpu_s"), 3),
                            "web_last_repeat": runs[-1]["web"],
                            "web_browsers_completed": sum(
                                r["web"]["browser"].get("status") == "completed" for r in runs
                            ),
                        }
                        if runs[-1]["web"]
                        else {}
                    ),
                    "cpus": os.cpu_count(),
                }
            )
        )


if __name__ == "__main__":
    main()
