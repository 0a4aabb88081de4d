"""Drivers as plug-ins: a lab's package outside spinlab's tree registers drivers through the
``spinlab.drivers`` entry point, a station file names them, and the bench runs against them.

The package is built by the test in a temporary directory (a module and a dist-info folder with
entry_points.txt, no pip) and put on the path of a fresh interpreter. Its drivers hold one of
spinlab's drivers inside and forward only the members of their role, so the bench running on
them also shows that it uses nothing but the roles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from spinlab.instruments.station import STATIONS_DIR

LAB_PACKAGE = '''
"""A lab's driver package: each driver forwards its role's members, and nothing else."""
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.keithley import KEITHLEY_2400_DRIVER
from spinlab.instruments.keysight_awg import KEYSIGHT_33500B
from spinlab.instruments.keysight_scope import KEYSIGHT_INFINIIVISION
from spinlab.instruments.roles import ROLES, role_members

CALLS = set()  # (role, member) the bench used


def _forward(role, name, attr):
    if callable(attr) and not isinstance(attr, property) and not isinstance(attr, type):
        def method(self, *args, **kwargs):
            CALLS.add((role, name))
            return getattr(self._inner, name)(*args, **kwargs)
        return method

    def get(self):
        CALLS.add((role, name))
        return getattr(self._inner, name)

    def set(self, value):
        CALLS.add((role, name))
        setattr(self._inner, name, value)
    return property(get, set)


def adapter(role, spec):
    def __init__(self, resource, **kwargs):
        self._inner = spec.driver(resource, **kwargs)
        self.adapter = self._inner.adapter

    members = {"__init__": __init__}
    for name in role_members(ROLES[role]):
        members[name] = _forward(role, name, getattr(spec.driver, name))
    return type("Lab" + spec.driver.__name__, (), members)


LAB_AWG = DriverSpec("lab-awg", "awg", adapter("awg", KEYSIGHT_33500B), r"Agilent Technologies",
                     r"33522B", KEYSIGHT_33500B.capabilities, "the lab's AWG")
LAB_SCOPE = DriverSpec("lab-scope", "scope", adapter("scope", KEYSIGHT_INFINIIVISION), r"Keysight.*",
                       r"DSOX4024A", KEYSIGHT_INFINIIVISION.capabilities, "the lab's scope")
LAB_SOURCE = DriverSpec("lab-source", "source", adapter("source", KEITHLEY_2400_DRIVER), r"Keithley.*",
                        r"Model 2400", KEITHLEY_2400_DRIVER.capabilities, "the lab's source")
'''

BROKEN_PACKAGE = """
from spinlab.instruments.drivers import DriverSpec


class HalfScope:
    def arm_single(self):
        pass


HALF_SCOPE = DriverSpec("half-scope", "scope", HalfScope, "x", "y", None)
"""

SCRIPT = """
import json, sys
import numpy as np
from spinlab import Waveform
from spinlab.errors import ConfigError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.drivers import find_driver, installed_drivers
import labdrivers

out = {"installed": sorted(installed_drivers())}
with open_bench(sys.argv[1]) as bench:
    response = bench.respond(Waveform(np.zeros((2, 64)), 100e-9), {"bias_A": 7.5e-3})
    out["shape"] = list(response.samples.shape)
    out["drivers"] = bench.drivers
    out["types"] = [type(bench.awg).__name__, type(bench.scope).__name__, type(bench.source).__name__]
    lab = bench.lab
out["off"] = [lab.awg.output_on, lab.source.output_on]
out["calls"] = sorted(f"{role}.{name}" for role, name in labdrivers.CALLS)
for name, role in (("nope", "awg"), ("half-scope", "scope")):
    try:
        find_driver(name, role)
    except ConfigError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def dist(site: Path, name: str, module: str, entry_points: str) -> None:
    (site / f"{name}.py").write_text(textwrap.dedent(module))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[spinlab.drivers]\n" + entry_points)


def test_a_lab_package_registers_drivers_that_the_bench_runs_on(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    dist(
        site,
        "labdrivers",
        LAB_PACKAGE,
        "".join(f"lab-{role} = labdrivers:LAB_{role.upper()}\n" for role in ("awg", "scope", "source")),
    )
    dist(site, "brokendrivers", BROKEN_PACKAGE, "half-scope = brokendrivers:HALF_SCOPE\n")
    station = tmp_path / "lab.toml"
    text = (STATIONS_DIR / "emulated.toml").read_text()
    for role in ("awg", "scope", "source"):
        text = text.replace(f"\n[{role}]\n", f'\n[{role}]\ndriver = "lab-{role}"\n', 1)
    station.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(station)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"lab-awg", "lab-scope", "lab-source", "keysight-33500b"} <= set(out["installed"])
    assert "half-scope" not in out["installed"]  # a broken package does not stop the others
    assert out["drivers"] == {
        "awg": "lab-awg",
        "scope": "lab-scope",
        "source": "lab-source",
        "analyser": "keysight-xseries",  # the station's analyser, served by spinlab's own driver
        "magnet": "kepco-bop",  # the station's magnet and gaussmeter: spinlab's own, by *IDN?
        "gaussmeter": "lakeshore-425",
    }
    assert out["types"] == ["LabKeysight33500B", "LabInfiniiVisionScope", "LabKeithley2400"]
    assert out["shape"] == [2, 64]
    assert out["off"] == [False, False]
    for used in ("awg.upload_arb", "awg.trigger", "scope.read_waveform", "source.output_state"):
        assert used in out["calls"]
    assert "installed awg drivers: keysight-33500b, keysight-33600a, lab-awg" in out["nope"]
    assert "half-scope" in out["half-scope"] and "lacks the scope role's" in out["half-scope"]
    assert "configure_capture" in out["half-scope"] and "\n" not in out["half-scope"]
