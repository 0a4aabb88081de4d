"""Records over LAN sockets: the built-in emulated station served by ``serve_tcp`` and reached
through pyvisa-py, as a lab's station is, with Nagle's algorithm off (spinlab's links) and on
(pyvisa-py's default), interleaved in one process.

Prints one JSON line:
  {"metric": "tcp_record", "samples": ..., "records": ..., "nodelay_s": ..., "nagle_s": ..., "ratio": ...}

``nodelay_s`` and ``nagle_s`` are the median wall time of one record (upload, arm, trigger, read
back, error checks) each way. Target: ratio >= 2 (each write after a write waited ~40 ms for the
instrument's delayed acknowledgement).

Usage: ``python benchmarks/bench_tcp_records.py [--samples N] [--records R]``
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _nagle(bench, on: bool) -> None:
    """Nagle's algorithm on or off on every link's socket (pyvisa-py sessions)."""
    for link in bench.links.values():
        connection = link.driver.adapter.connection
        sock = connection.visalib.sessions[connection.session].interface
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0 if on else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--records", type=int, default=20)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from tcp_helpers import write_station

    from spinlab import Waveform
    from spinlab.instruments.bench import open_bench
    from spinlab.registry import open_device
    from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=1)
    drive = Waveform(np.random.default_rng(0).uniform(-0.1, 0.1, args.samples), 1e-8)
    times: dict[bool, list[float]] = {True: [], False: []}
    with serve_tcp(lab, "127.0.0.1", 0, 0, 0) as servers, tempfile.TemporaryDirectory() as tmp:
        bench = open_bench(str(write_station(Path(tmp), servers.resources)))
        try:
            bench.respond(drive, {"bias_A": 7.5e-3})  # warm-up: numba, caches, bias ramp
            for i in range(2 * args.records):
                nagle = bool(i % 2)
                _nagle(bench, nagle)
                start = time.perf_counter()
                bench.respond(drive, {"bias_A": 7.5e-3})
                times[nagle].append(time.perf_counter() - start)
        finally:
            _nagle(bench, False)
            bench.close()
    nodelay_s, nagle_s = float(np.median(times[False])), float(np.median(times[True]))
    print(
        json.dumps(
            {
                "metric": "tcp_record",
                "samples": args.samples,
                "records": args.records,
                "nodelay_s": round(nodelay_s, 4),
                "nagle_s": round(nagle_s, 4),
                "ratio": round(nagle_s / nodelay_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
