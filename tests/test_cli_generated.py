"""`spinlab run PLAN`, generated from each registered plan's config: one name for a setting
everywhere (flag, `--set` key, sweep `--grid` name, Python keyword, run-file key), help with its
default and unit, the old commands and flags as aliases."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import h5py
import pytest
import typer
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.cli.plans import flag, kind, text, unit
from spinlab.engine.plan import plan_command, plan_factory, plan_names
from spinlab.sweeps import SweepSpec

#: what each plan needs besides its defaults to be built (not run)
REQUIRED = {
    "spoken-digits": {"data_dir": "fsdd"},
    "demo": {"data_dir": "fsdd"},
    "twin-train": {"out": "twin.pt", "acquire": {"validation_every": 6}},
    "twin-eval": {"checkpoint": "twin.pt"},
    "fit-physics": {"model": "vortex", "params": ["Q"], "source_run": "runs/x"},
    "optimise-spoken-digits": {"protocol": {"data_dir": "fsdd"}},
    "search": {"plan": "reservoir-measures", "over": ["bias_A"], "objective": "memory_capacity"},
}
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def _fields(name: str) -> dict:
    return plan_command(name).config.model_fields


def test_every_registered_plan_is_a_run_command():
    listed = _help("run")
    assert set(plan_names()) >= {
        "characterize",
        "acquire",
        "spoken-digits",
        "mackey-glass",
        "twin-train",
        "twin-eval",
        "fit-physics",
        "optimise-spoken-digits",
        "demo",
    }
    for name in plan_names():
        assert plan_command(name) is not None, f"{name} declares no command"
        assert f" {name} " in listed


@pytest.mark.parametrize("name", plan_names())
def test_every_setting_has_one_name_flag_set_key_grid_name_keyword_and_run_file_key(name):
    base = REQUIRED.get(name, {})
    config = plan_factory(name)(base).config_dict()
    shown = _help("run", name)
    command = typer.main.get_command(app).get_command(None, "run").get_command(None, name)
    device = None if plan_command(name).device == "none" else "sim:vortex"
    for field, info in _fields(name).items():
        value = config[field]
        # a Python keyword, and the run file's key
        assert plan_factory(name)(base, **{field: value}).config_dict()[field] == value
        # a sweep's --set and --grid name
        assert SweepSpec(name, device, settings={**base, field: value}).base_config()[field] == value
        point = SweepSpec(
            name, device, settings={k: v for k, v in base.items() if k != field}, grid={field: [value]}
        ).points()[0]
        assert point.config[field] == value and point.values == {field: value}
        if field == "seed":  # set by the run's own --seed
            assert "--seed" in shown
            continue
        if kind(info.annotation) is None:  # a group: --set GROUP.NAME=VALUE, listed under --set
            assert f"{field} (" in shown.split("--set", 1)[1], f"{name}: group {field} not listed"
            continue
        # a flag named after the field, parsed into the field
        typed = text(value) if value not in (None, [], ()) else None
        if typed is not None:
            option = (
                flag(field)
                if kind(info.annotation) is not bool
                else (flag(field) if value else "--no-" + flag(field)[2:])
            )
            args = [option] if kind(info.annotation) is bool else [option, typed]
            params = command.make_context(name, ["-d", "sim:vortex", *args] if device else args).params
            assert params[field] is not None, f"{name}: {option} did not reach {field}"
        # listed in the help with its description, unit and default
        description = info.description.rstrip(".")
        found = unit(field, info)
        row = f"{description} ({found})." if found else f"{description}."
        default = "required" if info.is_required() else text(info.default)
        assert f"{flag(field)} " in shown or f"{flag(field)}," in shown, f"{name}: no {flag(field)}"
        assert f"{' '.join(row.split())} [default: ({default})]" in shown, f"{name}: {field} help"


@pytest.mark.parametrize("name", plan_names())
def test_every_field_has_a_one_line_description(name):
    for field, info in _fields(name).items():
        assert info.description and "\n" not in info.description, f"{name}.{field}"


def test_units_come_from_metadata_or_the_name():
    fields = _fields("characterize")
    assert unit("step_bias_A", fields["step_bias_A"]) == "A"
    assert unit("sweep_dt_s", fields["sweep_dt_s"]) == "s"
    assert unit("bias_points", fields["bias_points"]) is None
    assert "Points of the zero-drive bias sweep (a fit of four parameters needs 6). [default: (20)]" in _help(
        "run", "characterize"
    )


def _config(run_dir: str) -> dict:
    with h5py.File(Path(run_dir) / "run.h5") as f:
        return json.loads(f.attrs["config"])


def test_a_flag_a_set_key_and_the_old_command_give_the_same_run(tmp_path):
    small = [
        "--device",
        "sim:vortex",
        "--bias-points",
        "8",
        "--step-repeats",
        "64",
        "--runs-dir",
        str(tmp_path),
        "--json",
    ]
    runs = []
    for args in (
        ["run", "characterize", "--step-batches", "2", "--sweep-duration-s", "2e-5", *small],
        ["run", "characterize", "--set", "step_batches=2", "--set", "sweep_duration_s=2e-5", *small],
        ["characterize", "--step-batches", "2", "--set", "sweep_duration_s=2e-5", *small],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        runs.append(summary)
    configs = [_config(s["run_dir"]) for s in runs]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["step_batches"] == 2 and configs[0]["sweep_duration_s"] == 2e-5
    assert runs[0]["threshold_A"] == runs[1]["threshold_A"] == runs[2]["threshold_A"]


@pytest.mark.parametrize(
    "old, new",
    [
        (
            [
                "run",
                "mackey-glass",
                "--points",
                "2000",
                "--nodes",
                "20",
                "--alpha",
                "1e-3",
                "--data",
                "mg.txt",
            ],
            {"n_points": 2000, "n_nodes": 20, "alphas": "1e-3", "data_path": "mg.txt"},
        ),
        (
            [
                "run",
                "spoken-digits",
                "--nodes",
                "200",
                "--mask",
                "normal",
                "--features",
                "mfcc",
                "--data",
                "d",
            ],
            {"n_nodes": 200, "mask_kind": "normal", "feature_kind": "mfcc", "data_dir": "d"},
        ),
        (["acquire", "--duration", "1e-3"], {"duration_s": 1e-3}),
        (
            ["twin", "eval", "t.pt", "--drives", "3", "--mumax", "table.txt"],
            {"argument_": "t.pt", "n_drives": 3, "table": "table.txt"},
        ),
    ],
)
def test_old_flags_reach_the_fields_they_always_set(old, new):
    group = typer.main.get_command(app)
    command = group.get_command(None, old[0])
    args = old[1:]
    while isinstance(command, typer.core.TyperGroup):
        command, args = command.get_command(None, args[0]), args[1:]
    params = command.make_context(old[-1], ["-d", "sim:vortex", *args]).params
    got = {k: params[k].value if hasattr(params[k], "value") else params[k] for k in new}
    assert got == new


def test_old_flags_of_settings_inside_a_group_set_that_setting(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "twin",
            "train",
            "--device",
            "sim:vortex",
            "--out",
            str(tmp_path / "t.pt"),
            "--hidden",
            "abc",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "--hidden" in result.output and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "characterize", "-d", "sim:vortex", "--bias-points", "3"], "bias_points"),
        (["run", "characterize", "-d", "sim:vortex", "--set", "nosuch=1"], "nosuch"),
        (["run", "characterize", "-d", "sim:vortex", "--set", "=1"], "NAME=VALUE"),
        (["run", "twin-train", "--out", "x.pt"], "--device ADDRESS or --mumax TABLE"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path, args, says):
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.output
    assert not list(tmp_path.iterdir())  # refused before a run directory exists


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"spinlab {version('spinlab')}"


def test_help_is_one_style_units_in_parentheses():
    for name in plan_names():
        shown = _help("run", name)
        assert not re.search(r"\[(A|s|V|T|K|Hz)\]", shown), name


def test_a_setting_of_a_nested_model_is_reached_as_group_dot_name(tmp_path):
    """optimise-spoken-digits holds the spoken-digit config it starts from as ``protocol``."""
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "fsdd" / "0_jackson_0.wav").touch()
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "optimise-spoken-digits",
            "-d",
            "sim:vortex",
            "--data",
            str(tmp_path / "fsdd"),
            "--set",
            "protocol.n_nodes=0",
            "--runs-dir",
            str(runs),
        ],
    )
    assert result.exit_code == 2 and not runs.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "SpokenDigitsConfig: n_nodes" in lines[0], result.output


def test_a_command_run_in_process_gives_the_callers_signal_handlers_back(tmp_path):
    """Only the `spinlab` process itself turns deaf to late signals after its run: a program
    that runs a command in-process (and the processes it starts later) keeps its handlers."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    args = ["run", "characterize", "--device", "sim:vortex", "--bias-points", "8", "--step-repeats", "64"]
    result = CliRunner().invoke(app, [*args, "--step-batches", "2", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {s: signal.getsignal(s) for s in before} == before
