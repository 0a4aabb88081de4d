"""How spinlab installs: one import name, plug-in device schemes, a light `spinlab --help`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "spinlab": "spinlab",
    "instruments": "spinlab.instruments",
    "protocols": "spinlab.protocols",
    "sim_backends": "spinlab.sim_backends",
}


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter outside the repository (as a user's script would)."""
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_every_package_folder_is_installed_under_spinlab():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)) if parts else name)
    assert set(config["packages"]) == found
    assert config["package-dir"] == {v: k for k, v in FOLDERS.items()}


def test_spinlab_is_the_only_top_level_name_of_the_distribution(tmp_path):
    result = _python(
        """
        import importlib.metadata as m, json
        print(json.dumps(sorted(k for k, v in m.packages_distributions().items() if "spinlab" in v)))
    """,
        tmp_path,
    )
    assert json.loads(result.stdout) == ["spinlab"], result.stderr


def test_instrumentkit_and_spinlab_instruments_coexist(tmp_path):
    """InstrumentKit's import name is ``instruments``; ours is ``spinlab.instruments``. CI
    installs InstrumentKit and runs this again (see .ci/run)."""
    probe = _python("import instruments", tmp_path)
    if probe.returncode != 0:
        pytest.skip("InstrumentKit is not installed here (.ci/run installs it and runs this test)")
    result = _python(
        """
        import importlib.metadata as m, json
        import instruments
        import spinlab.instruments
        from spinlab import open_device
        with open_device("bench:emulated") as bench:
            idn = bench.identity()["instruments"]["awg"]
        print(json.dumps({"instruments": instruments.__file__, "version": instruments.__version__,
                          "ours": spinlab.instruments.__file__, "awg": idn,
                          "kit": m.version("instrumentkit")}))
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["version"] == seen["kit"] and "spinlab" not in seen["instruments"]
    assert Path(seen["ours"]).parent.name == "instruments" and "33522B" in seen["awg"]


def test_instrumentkit_s_lakeshore_475_reads_the_emulated_475(tmp_path):
    """Another project's driver for the model against our emulator: InstrumentKit's
    ``Lakeshore475`` over TCP reads the field our ``lakeshore-475`` driver reads (CI installs
    InstrumentKit and runs this, see .ci/run)."""
    if _python("import instruments", tmp_path).returncode != 0:
        pytest.skip("InstrumentKit is not installed here (.ci/run installs it and runs this test)")
    result = _python(
        """
        import json
        import time
        import instruments as ik
        from spinlab.instruments.kepco_bop import KepcoBOP
        from spinlab.instruments.lakeshore_gaussmeter import LakeShore475
        from spinlab.registry import open_device
        from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

        lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=1, models={"gaussmeter": "lakeshore-475"})
        with serve_tcp(lab, "127.0.0.1", 0, 0, 0) as servers:
            resource = servers.resources["gaussmeter"]
            _, host, port, _ = resource.split("::")
            supply = KepcoBOP(servers.resources["magnet"], visa_library="@py")
            supply.enter_current_mode(voltage_limit_V=20.0)
            supply.current_setpoint_A = 2.0
            time.sleep(1.0)  # the coil's L/R settles
            kit = ik.lakeshore.Lakeshore475.open_tcpip(host, int(port))
            field = kit.field  # in the meter's units: a pint (0.7+) or quantities (0.6) quantity
            tesla = field.to("tesla") if hasattr(field, "to") else field.rescale("T")
            ours = LakeShore475(resource, visa_library="@py")
            print(json.dumps({"idn": kit.name, "theirs": float(tesla.magnitude), "ours": ours.field_T()}))
            ours.adapter.close()
            supply.shutdown()
            supply.adapter.close()
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "MODEL475" in seen["idn"]
    assert seen["ours"] > 0.05  # the coil at 2 A
    assert abs(seen["theirs"] - seen["ours"]) < 1e-3 * seen["ours"]  # the same field, two readings


def test_a_plugin_package_adds_a_device_scheme_through_the_entry_point_group(tmp_path):
    """A package nobody told spinlab about declares ``spinlab.devices`` in its metadata; its
    scheme then opens by address."""
    (tmp_path / "labplug.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from spinlab import Device

        class Echo(Device):
            def __init__(self, gain=1.0, seed=0):
                super().__init__()
                self.gain, self.seed = float(gain), int(seed)

            def _respond(self, drive, dt_s, conditions):
                return self.gain * drive

        def open_echo(target, **options):
            return Echo(**options)
    """)
    )
    dist = tmp_path / "labplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[spinlab.devices]\necho = labplug:open_echo\n")
    result = _python(
        """
        import numpy as np
        from spinlab import Waveform, open_device
        from spinlab.registry import schemes
        with open_device("echo:anything?gain=3", defaults={"seed": 4}) as dev:
            out = dev.respond(Waveform(np.full(4, 0.25), 1e-9)).samples
            print(schemes(), out.tolist(), dev.seed, dev.address)
    """,
        tmp_path,
        PYTHONPATH=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "['bench',",
        "'echo',",
        "'sim',",
        "'twin']",
        "[0.75,",
        "0.75,",
        "0.75,",
        "0.75]",
        "4",
        "echo:anything?gain=3",
    ]


def test_runtime_registration_and_unknown_schemes():
    import numpy as np

    from spinlab import Device, DeviceAddressError, Waveform, open_device, register_scheme
    from spinlab.registry import unregister_scheme

    class Zero(Device):
        def _respond(self, drive, dt_s, conditions):
            return np.zeros_like(drive)

    register_scheme("zero", lambda target, seed=0: Zero())
    try:
        assert open_device("zero:x").respond(Waveform(np.full(3, 0.1), 1e-9)).samples.tolist() == [0, 0, 0]
    finally:
        unregister_scheme("zero")
    with pytest.raises(DeviceAddressError, match="known schemes: bench:, sim:, twin:"):
        open_device("zero:x")


def test_help_imports_no_protocol_and_no_heavy_library(tmp_path):
    result = _python(
        """
        import sys
        from spinlab.cli import app
        try:
            app(["--help"], standalone_mode=False)
        except SystemExit:
            pass
        loaded = sorted(m for m in sys.modules if m.startswith(("spinlab.", "scipy", "torch", "numba", "h5py")))
        print(" ".join(loaded))
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split("\n")[-2].split()
    assert not [
        m for m in loaded if m.startswith(("spinlab.protocols", "scipy", "torch", "numba", "h5py"))
    ], loaded


def test_command_table_short_help_matches_each_command():
    from spinlab.cli import COMMANDS, module_commands

    for name, (module, short) in COMMANDS.items():
        command = module_commands(module).commands[name]
        first = (command.help or "").strip().splitlines()[0]
        assert first == short, f"{name}: table says {short!r}, the command says {first!r}"
