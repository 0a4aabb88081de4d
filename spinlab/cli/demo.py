"""`spinlab demo`: the first run on a fresh machine (see :mod:`spinlab.protocols.demo`)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import typer

from spinlab.cli.common import JsonOption, RunOptions, emit_json, run_command, run_plan, user_errors

#: Where the demo publishes unless --monitor says: a free port on this machine, printed at the start.
DEFAULT_MONITOR = "tcp://127.0.0.1:0"


@run_command
def demo(
    device: str = typer.Option("bench:emulated", "--device", "-d",
                               help="Device address (the emulated bench: real drivers and SCPI around a vortex model)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder of FSDD .wav recordings (default: $SPINLAB_FSDD, "
                                        "else the `spinlab data fetch fsdd` cache)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Utterances of the stratified FSDD subset (by digit and "
                                        "speaker; 10 % of them test), the same for the twin and the bench (default 800)."),
    twin_steps: Optional[int] = typer.Option(None, "--twin-steps", help="Training steps budget of the twin (default 6000; "
                                             "it stops sooner at NRMSE 0.1)."),
    threads: int = typer.Option(1, "--threads", help="CPU threads of torch and of numpy's BLAS (1 is fastest when "
                                "other jobs share the cores: a 2-thread BLAS solved the readout 5-10x slower there)."),
    json_out: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Characterise the emulated bench, train its twin through it, recognise spoken digits on both."""
    start = time.perf_counter()
    with user_errors():
        from spinlab.audio import find_fsdd

        data_dir = find_fsdd(data)  # before anything is imported or opened: a missing dataset is one line
        from spinlab.protocols import demo as protocol

        given = {k: v for k, v in {"limit": limit, "twin_max_steps": twin_steps}.items() if v is not None}
        plan = protocol.plan(data_dir=str(data_dir), threads=threads, feature_cache_dir=str(Path(run.runs_dir) / ".cache"),
                             **given)
        result = run_plan(plan, device, dataclasses.replace(run, monitor=run.monitor or DEFAULT_MONITOR))
    report = {**result.summary, "run_dir": str(result.path), "wall_s": time.perf_counter() - start}
    if json_out:
        emit_json(report)
        return
    for line in report_lines(report):
        typer.echo(line)


def report_lines(r: dict[str, Any]) -> list[str]:
    """The report a newcomer reads."""
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in r["stage_s"].items())
    return [
        f"device {r['device']}: threshold {r['threshold_A'] * 1e3:.3f} mA, relaxation time "
        f"{r['relaxation_time_s'] * 1e9:.0f} ns; operating point {r['bias_A'] * 1e3:.2f} mA "
        f"({r['operating_z']:g} x threshold)",
        f"twin: NRMSE {r['twin_nrmse']:.3f} on fresh drives against the device's mean response "
        f"({r['twin_training_nrmse']:.3f} held out in training, {r['twin_steps']} steps)",
        f"spoken digits, {r['n_train']} training / {r['n_test']} test utterances (stratified by digit and speaker):",
        f"  bench {100 * r['bench_accuracy']:.1f} %   twin {100 * r['twin_accuracy']:.1f} %   "
        f"no device (masked features, linear) {100 * r['baseline_accuracy']:.1f} %   "
        f"pooled MFCC {100 * r['mfcc_reference_accuracy']:.1f} %",
        f"  device calls: bench {r['bench_device_s']:.1f} s, twin {r['twin_device_s']:.1f} s "
        f"(twin {r['speed_ratio']:.2g}x the bench's speed)",
        f"stages: {stages}; total {r['wall_s'] / 60:.1f} min",
        "plots: " + "  ".join(r["plots"]),
        f"run files: {r['run_dir']}/run.h5 and stages/*/run.h5; twin {r['twin']}",
        f"try next: spinlab listen --device {r['device']} --readout {r['readout']}",
    ]


def register(app: typer.Typer) -> None:
    """Add `demo` to the app."""
    app.command("demo")(demo)
