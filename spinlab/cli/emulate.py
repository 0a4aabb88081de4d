"""`spinlab emulate`: serve the emulated bench as raw-socket SCPI instruments on localhost, or a
recorded transcript (``--replay``) so that any driver can replay a lab's dialogue."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import threading
from pathlib import Path
from typing import Any

import typer

from spinlab.cli.common import MAX_SEED, JsonOption, emit_json, stopped_by_signals, user_errors


def emulate(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (keep localhost unless you need LAN access)."
    ),
    awg_port: int = typer.Option(5025, "--awg-port", help="Port of the emulated AWG (0 = any free port)."),
    scope_port: int = typer.Option(
        5026, "--scope-port", help="Port of the emulated scope (0 = any free port)."
    ),
    source_port: int = typer.Option(
        5027, "--source-port", help="Port of the emulated DC source (0 = any free port)."
    ),
    awg: str = typer.Option(
        "keysight-33500b", "--awg", help="Which AWG to emulate, by driver name (e.g. tektronix-awg5200)."
    ),
    scope: str = typer.Option(
        "keysight-infiniivision", "--scope", help="Which oscilloscope to emulate, by driver name."
    ),
    source: str = typer.Option(
        "keithley-2400",
        "--source",
        help="Which DC source to emulate, by driver name (keithley-2450, keithley-6221).",
    ),
    analyser: str = typer.Option(
        "keysight-xseries", "--analyser", help="Which spectrum analyser to emulate, by driver name (rs-fsv)."
    ),
    analyser_port: int = typer.Option(
        5030, "--analyser-port", help="Port of the emulated spectrum analyser (0 = any free port)."
    ),
    magnet_port: int = typer.Option(
        5028, "--magnet-port", help="Port of the emulated Kepco BOP magnet supply (0 = any free port)."
    ),
    gaussmeter: str = typer.Option(
        "lakeshore-425", "--gaussmeter", help="Which gaussmeter to emulate, by driver name (lakeshore-475)."
    ),
    gaussmeter_port: int = typer.Option(
        5029, "--gaussmeter-port", help="Port of the emulated gaussmeter (0 = any free port)."
    ),
    device: str = typer.Option(
        "sim:vortex", "--device", "-d", help="Device model wired between AWG and scope (sim:..., twin:...)."
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        min=0,
        max=MAX_SEED,
        help="Seed of the emulated instruments' and the device's noise (nothing is recorded: "
        "emulate writes no run file); a seed in the device address wins for the device's noise.",
    ),
    trigger_delay_s: float = typer.Option(
        20e-9, "--trigger-delay-s", help="Delay from AWG trigger to the response at the scope."
    ),
    scope_noise_V: float = typer.Option(
        1e-3, "--scope-noise-V", help="RMS input noise of the scope channel."
    ),
    faults: str = typer.Option(
        "",
        "--faults",
        help="Faults to inject, e.g. 'silent@scope:at=40,drop@awg:p=0.01:count=inf' "
        "(KIND@INSTRUMENT[:at=N][:count=N|inf][:p=P][:s=SECONDS]; kinds: delay silent nan drop "
        "error reset truncate length corrupt overrange).",
    ),
    replay: Path | None = typer.Option(
        None,
        "--replay",
        metavar="FILE",
        help="Serve a recorded transcript (--record DIR, bench:...?record=DIR) instead of the emulated "
        "instruments: each recorded instrument answers its recorded replies on its port; the first "
        "message the recording lacks closes that connection and is reported.",
    ),
    json_output: bool = JsonOption,
) -> None:
    """Serve the emulated instruments, or a recorded transcript, until Ctrl-C; prints their resources.

    The AWG, scope, DC source, magnet supply, gaussmeter and spectrum analyser, each on its port.
    Ctrl-C, SIGTERM or SIGHUP stop it; `kill -USR1` prints the stack of each of its threads."""
    from spinlab.registry import open_device
    from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

    ports = {"awg": awg_port, "scope": scope_port, "source": source_port}
    ports.update(magnet=magnet_port, gaussmeter=gaussmeter_port, analyser=analyser_port)
    if replay is not None:
        with user_errors():
            if faults:
                from spinlab.errors import ConfigError

                raise ConfigError("--faults applies to emulated instruments, not to a replayed transcript")
            _serve_replay(replay, host, ports, json_output)
        return
    with user_errors():
        model = open_device(device, defaults={"seed": seed})
        try:
            lab = EmulatedLab(
                model,
                seed=seed,
                trigger_delay_s=trigger_delay_s,
                scope_noise_V=scope_noise_V,
                faults=faults or None,
                models={
                    "awg": awg,
                    "scope": scope,
                    "source": source,
                    "analyser": analyser,
                    "gaussmeter": gaussmeter,
                },
            )
            try:
                servers = serve_tcp(
                    lab,
                    host,
                    awg_port,
                    scope_port,
                    source_port,
                    magnet=magnet_port,
                    gaussmeter=gaussmeter_port,
                    analyser=analyser_port,
                )
            except OSError as exc:
                from spinlab.errors import ConfigError

                raise ConfigError(
                    f"cannot listen on {host} ports {awg_port}/{scope_port}/{source_port}/{magnet_port}/"
                    f"{gaussmeter_port}/{analyser_port}: {exc}; "
                    "pick free ports (0 = any)"
                ) from None
            try:
                with stopped_by_signals():  # installed before the resources are shown
                    resources = servers.resources
                    if json_output:
                        emit_json(
                            {
                                "resources": resources,
                                "models": lab.models,
                                "device": device,
                                "seed": seed,
                                "faults": [str(f) for f in lab.faults],
                            }
                        )
                    else:
                        for role, resource in resources.items():
                            typer.echo(f"{role:<11}{resource}")
                    # `kill -USR1 PID` prints every thread's stack: where an emulator that hangs is stuck
                    faulthandler.register(signal.SIGUSR1, all_threads=True)
                    typer.secho("emulated instruments ready; Ctrl-C to stop", err=True, fg="green")
                    _wait_forever()
            except KeyboardInterrupt:
                pass  # Ctrl-C is how this command is meant to end
            finally:
                servers.close()
        finally:
            model.close()
        typer.secho("emulated instruments stopped", err=True)


def _serve_replay(path: Path, host: str, ports: dict[str, int], json_output: bool) -> None:
    """Serve the transcript at ``path`` until Ctrl-C, then say what departed from it."""
    from spinlab.errors import ConfigError
    from spinlab.sim_backends.emulated.replay import ReplayServers

    try:
        servers = ReplayServers(path, host, ports)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host} ports {sorted(ports.values())}: {exc}; pick free ports (0 = any)"
        ) from None
    with servers:
        with contextlib.suppress(KeyboardInterrupt), stopped_by_signals():  # how this command ends
            if json_output:
                emit_json({"resources": servers.resources, "replay": str(path)})
            else:
                for role, resource in servers.resources.items():
                    typer.echo(f"{role:<11}{resource}")
            typer.secho(f"replaying {path}; Ctrl-C to stop", err=True, fg="green")
            _wait_forever()
        report: dict[str, Any] = {"failures": servers.failures, "remaining": servers.remaining()}
    for failure in report["failures"]:
        typer.secho(f"departed from the recording: {failure}", err=True, fg="red")
    typer.secho(f"replay stopped; not replayed: {report['remaining'] or 'nothing'}", err=True)


def _wait_forever() -> None:
    stop = threading.Event()
    while not stop.wait(0.5):
        pass


def register(app: typer.Typer) -> None:
    """Add ``spinlab emulate`` to the app."""
    app.command("emulate")(emulate)
