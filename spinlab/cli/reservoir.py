"""`spinlab run spoken-digits`, `spinlab run mackey-glass` and `spinlab data fetch fsdd`: the
reservoir protocols and their data."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from spinlab.cli.common import (DeviceOption, JsonOption, RunOptions, emit_json, run_command, run_plan,
                                user_errors)
from spinlab.protocols.mackey_glass import MackeyGlassConfig as _M
from spinlab.protocols.spoken_digits import SpokenDigitsConfig

_D = SpokenDigitsConfig.model_construct(data_dir="")  # the defaults, for the help texts

run_app = typer.Typer(help="Run a lab protocol on a device.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets used by the protocols.", no_args_is_help=True)
fetch_app = typer.Typer(help="Download a dataset into the user cache (the only networked commands).",
                        no_args_is_help=True)


@run_command
def spoken_digits(
    device: str = DeviceOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Folder of FSDD .wav recordings "
                                        "(default: $SPINLAB_FSDD, else the `spinlab data fetch fsdd` cache)."),
    split: str = typer.Option("standard", "--split", help="standard (indices 0-4 test) or speaker."),
    test_speaker: Optional[str] = typer.Option(None, "--test-speaker", help="Held-out speaker for --split speaker."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help=f"Virtual nodes per frame (default {_D.n_nodes})."),
    theta_s: Optional[float] = typer.Option(None, "--theta-s", help=f"Hold time of one virtual node (s) (default {_D.theta_s:g})."),
    samples_per_node: Optional[int] = typer.Option(None, "--samples-per-node", help=f"AWG samples per node (default {_D.samples_per_node})."),
    node_features: Optional[str] = typer.Option(None, "--node-features", help=f"samples (each sample a state) or mean (default {_D.node_features})."),
    bias_A: Optional[float] = typer.Option(None, "--bias-A", help=f"DC bias current (A) (default {_D.bias_A:g})."),
    drive_fraction: Optional[float] = typer.Option(None, "--drive-fraction", help=f"Drive amplitude / device max_drive_V (default {_D.drive_fraction})."),
    input_sigma: Optional[float] = typer.Option(None, "--input-sigma", help=f"Training std devs mapped to the amplitude (default {_D.input_sigma})."),
    mask: Optional[str] = typer.Option(None, "--mask", help=f"binary or normal (default {_D.mask_kind})."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Stratified subset of N utterances (quick bench runs)."),
    features: str = typer.Option("lyon", "--features", help="lyon, mfcc or logmel."),
    segments: Optional[int] = typer.Option(None, "--segments", help=f"Readout input: states pooled over N parts of each word "
                                           f"plus their spread; 0 = per-frame readout (default {_D.segments})."),
    augment_speeds: Optional[str] = typer.Option(None, "--augment-speeds", help="Training copies at these speeds, e.g. "
                                                 f"0.9,1.1, or none (default {','.join(map(str, _D.augment_speeds))})."),
    json_out: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Spoken-digit recognition with the device as a time-multiplexed reservoir (FSDD)."""
    with user_errors():
        from spinlab.audio import find_fsdd
        from spinlab.protocols import spoken_digits as protocol

        data_dir = find_fsdd(data)
        overrides = {k: v for k, v in {
            "n_nodes": nodes, "theta_s": theta_s, "samples_per_node": samples_per_node,
            "node_features": node_features, "bias_A": bias_A, "drive_fraction": drive_fraction,
            "input_sigma": input_sigma, "mask_kind": mask, "segments": segments,
            "augment_speeds": _speeds(augment_speeds)}.items() if v is not None}
        plan = protocol.plan(data_dir=str(data_dir), split=split, test_speaker=test_speaker, limit=limit,
                             feature_kind=features, feature_cache_dir=str(Path(run.runs_dir) / ".cache"),
                             **overrides)
        result = run_plan(plan, device, run)
    summary = {**result.summary, "run": str(result.path)}
    if json_out:
        emit_json(summary)
        return
    typer.echo(f"accuracy {100 * summary['accuracy']:.1f} % "
               f"(frame vote {100 * summary['frame_accuracy']:.1f} %), no-device baseline "
               f"{100 * summary['baseline_accuracy']:.1f} %, {summary['n_train']} train / "
               f"{summary['n_test']} test, {summary['wall_s']:.1f} s")
    for speaker, acc in summary["per_speaker"].items():
        typer.echo(f"  {speaker:<12} {100 * acc:5.1f} %")
    typer.echo(f"pooled-MFCC reference (no device) {100 * summary['mfcc_reference_accuracy']:.1f} %")
    typer.echo(f"run: {summary['run']}")
    if summary.get("readout"):
        typer.echo(f"readout saved: `spinlab listen --device {device} --readout {summary['run']}`")


@run_command
def mackey_glass(
    device: str = DeviceOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Mackey-Glass series, one value a line "
                                        "(default: generated from the delay equation, tau = 17)."),
    points: Optional[int] = typer.Option(None, "--points", help=f"Input points used (default {_M.model_fields['n_points'].default})."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help=f"Virtual nodes per point (default {_M.model_fields['n_nodes'].default})."),
    theta_s: Optional[float] = typer.Option(None, "--theta-s", help="Hold time of one node (s) (default: from the "
                                            "device's time scale: 2 grid samples of a twin, half an oscillator's relaxation time)."),
    samples_per_node: Optional[int] = typer.Option(None, "--samples-per-node", help=f"Drive samples per node (default {_M.model_fields['samples_per_node'].default})."),
    node_features: Optional[str] = typer.Option(None, "--node-features", help=f"samples (each sample a state) or mean (one per node) (default {_M.model_fields['node_features'].default})."),
    bias_A: Optional[float] = typer.Option(None, "--bias-A", help="DC bias current (A) (default: the device's)."),
    drive_fraction: Optional[float] = typer.Option(None, "--drive-fraction", help=f"Share of the device's drive range used (default {_M.model_fields['drive_fraction'].default})."),
    input_sigma: Optional[float] = typer.Option(None, "--input-sigma", help=f"Training std devs mapped to the end of the range (default {_M.model_fields['input_sigma'].default})."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="One ridge penalty for every horizon "
                                          "(default: chosen per horizon by blocked CV on the training part)."),
    max_horizon: Optional[int] = typer.Option(None, "--max-horizon", help=f"Longest prediction horizon (default {_M.model_fields['max_horizon'].default})."),
    json_out: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Mackey-Glass time-series prediction with the device as a time-multiplexed reservoir."""
    with user_errors():
        from spinlab.protocols import mackey_glass as protocol

        overrides = {k: v for k, v in {
            "data_path": None if data is None else str(data), "n_points": points, "n_nodes": nodes,
            "theta_s": theta_s, "samples_per_node": samples_per_node, "node_features": node_features,
            "bias_A": bias_A, "drive_fraction": drive_fraction, "input_sigma": input_sigma,
            "alphas": None if alpha is None else (alpha,), "max_horizon": max_horizon}.items() if v is not None}
        result = run_plan(protocol.plan(**overrides), device, run)
    summary = {**result.summary, "run": str(result.path)}
    if json_out:
        emit_json(summary)
        return
    shown = [h for h in protocol.REPORTED_HORIZONS if f"nrmse_h{h}" in summary]
    typer.echo(f"Mackey-Glass on {summary['device']}: {summary['n_nodes']} nodes of {summary['theta_s']:.3g} s "
               f"({summary['theta_reason']}), drive {summary['drive_quantity']} "
               f"{summary['drive_range'][0]:.4g}..{summary['drive_range'][1]:.4g} {summary['drive_unit']}")
    typer.echo("held-out NRMSE  " + "  ".join(f"H={h}: {summary[f'nrmse_h{h}']:.3g}" for h in shown))
    typer.echo("no device       " + "  ".join(f"H={h}: {summary[f'baseline_nrmse_h{h}']:.3g}" for h in shown)
               + "  (same readout on the masked input alone)")
    typer.echo(f"{summary['n_train']} train / {summary['n_test']} test points, {summary['wall_s']:.1f} s; "
               f"run: {summary['run']} (nrmse.png)")


def _speeds(value: Optional[str]) -> Optional[tuple[float, ...]]:
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"--augment-speeds takes numbers like 0.9,1.1 or 'none', got {value!r}") from None


def fetch_fsdd_command(
    dest: Optional[Path] = typer.Option(None, "--dest", help="Cache folder (default ~/.cache/spinlab/fsdd)."),
    force: bool = typer.Option(False, "--force", help="Download again even if a verified copy exists."),
    json_out: bool = JsonOption,
) -> None:
    """Download FSDD (pinned commit), verify its recordings' SHA-256, install into the cache.

    With ``$SPINLAB_FSDD`` set (and no --dest or --force) the protocols read that copy, so it is
    checked instead and nothing is downloaded: the fetch works offline there."""
    with user_errors():
        from spinlab.audio import (FSDD_COMMIT, FSDD_ENV, FSDD_RECORDINGS_SHA256, FSDD_URL, directory_digest,
                                   fetch_fsdd, find_fsdd)

        verified, local = True, bool(os.environ.get(FSDD_ENV)) and dest is None and not force
        if local:
            path = find_fsdd()
            verified = directory_digest(path) == FSDD_RECORDINGS_SHA256
            if not verified:
                typer.secho(f"warning: ${FSDD_ENV} = {path} is not the pinned FSDD copy (its recordings differ); "
                            f"the protocols use it as it is; unset {FSDD_ENV} to download the pinned copy",
                            err=True, fg="yellow")
        else:
            typer.echo(f"fetching {FSDD_URL} (commit {FSDD_COMMIT})", err=True)
            path = fetch_fsdd(dest, force=force)
        n = len(list(path.glob("*.wav")))
        if json_out:
            emit_json({"path": str(path), "n_recordings": n, "commit": FSDD_COMMIT, "verified": verified,
                       "downloaded": not local})
        elif local:
            typer.echo(f"{n} {'verified ' if verified else ''}recordings in {path} (${FSDD_ENV}); nothing to download")
        else:
            typer.echo(f"{n} verified recordings in {path}")


def register(app: typer.Typer) -> None:
    """Add `run spoken-digits`, `run mackey-glass` and `data fetch fsdd`."""
    run_app.command("spoken-digits")(spoken_digits)
    run_app.command("mackey-glass")(mackey_glass)
    fetch_app.command("fsdd")(fetch_fsdd_command)
    data_app.add_typer(fetch_app, name="fetch")
    app.add_typer(run_app, name="run")
    app.add_typer(data_app, name="data")
