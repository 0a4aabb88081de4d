"""Roles and the choice of driver: spinlab's drivers implement their roles, a station names a
driver per role or the instrument's *IDN? picks it, and a named driver that does not serve the
answering instrument is refused in one line before anything is configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinlab import Waveform
from spinlab.errors import ConfigError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.drivers import DRIVERS_GROUP, driver_for_idn, find_driver, installed_drivers
from spinlab.instruments.roles import AwgRole, missing_members, role_members
from spinlab.instruments.station import STATIONS_DIR, load_station

EMULATED = (STATIONS_DIR / "emulated.toml").read_text()


def station_with(tmp_path: Path, **sections: str) -> Path:
    """The emulated station with extra lines at the top of the named sections."""
    text = EMULATED
    for section, lines in sections.items():
        assert f"\n[{section}]\n" in text
        text = text.replace(f"\n[{section}]\n", f"\n[{section}]\n{lines}\n", 1)
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def test_spinlab_drivers_are_registered_and_implement_their_roles() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][DRIVERS_GROUP]
    drivers = installed_drivers()
    assert set(declared) <= set(drivers)
    for name in declared:
        spec = drivers[name]
        assert missing_members(spec.driver, spec.role) == [], name
    assert {"upload_arb", "playing_state", "output_enabled", "capabilities", "clear_errors"} <= set(
        role_members(AwgRole)
    )


def test_a_class_without_the_role_members_is_named() -> None:
    class HalfAwg:
        def trigger(self) -> None: ...

    missing = missing_members(HalfAwg, "awg")
    assert "upload_arb" in missing and "output_enabled" in missing and "trigger" not in missing


@pytest.mark.parametrize(
    ("idn", "role", "name"),
    [
        ("Agilent Technologies,33522B,MY52400001,4.03", "awg", "keysight-33500b"),
        ("Keysight Technologies,33622A,MY1,A.02", "awg", "keysight-33600a"),
        ("KEYSIGHT TECHNOLOGIES,DSOX4024A,MY-EMULATED,07.50", "scope", "keysight-infiniivision"),
        ("KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234,C32", "source", "keithley-2400"),
        ("TEKTRONIX,AWG5204,B010101,FV:6.3.0080.0", "awg", "tektronix-awg5200"),
        ("KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b", "source", "keithley-2450"),
        ("KEITHLEY INSTRUMENTS INC.,MODEL 6221,4143210,D03  /700x", "source", "keithley-6221"),
    ],
)
def test_idn_picks_the_driver(idn: str, role: str, name: str) -> None:
    assert driver_for_idn(role, idn).name == name


def test_an_instrument_no_driver_serves_is_one_line() -> None:
    with pytest.raises(
        ConfigError, match=r"no installed source driver serves .*MODEL 2651A.*keithley-2400"
    ) as e:
        driver_for_idn("source", "KEITHLEY INSTRUMENTS,MODEL 2651A,04,1.7")
    assert "\n" not in str(e.value)


def test_unknown_driver_lists_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_station(station_with(tmp_path, scope='driver = "tektronix-mso5"'))
    message = str(e.value)
    assert "\n" not in message
    assert "[scope] key 'driver'" in message and "'tektronix-mso5'" in message
    assert "installed scope drivers: keysight-infiniivision" in message
    with pytest.raises(ConfigError, match=r"'keithley-2400' drives a source, not a awg"):
        find_driver("keithley-2400", "awg")


def test_the_named_driver_supplies_the_capabilities(tmp_path: Path) -> None:
    # the 33600A driver: its family and its 1 GSa/s are the station's defaults
    station = load_station(station_with(tmp_path, awg='driver = "keysight-33600a"'))
    assert station.awg.model == "33600A" and station.driver_name("awg") == "keysight-33600a"
    # the 33500B driver refuses a rate only a 33600A has
    path = station_with(tmp_path, awg='driver = "keysight-33500b"')
    path.write_text(path.read_text().replace("max_sample_rate_Hz = 160e6", "max_sample_rate_Hz = 1e9"))
    with pytest.raises(ConfigError, match=r"\[awg\] key 'max_sample_rate_Hz' .* beyond the 33500B's"):
        load_station(path)
    with pytest.raises(ConfigError, match=r"\[awg\] key 'model' = '33500B', but driver 'keysight-33600a'"):
        load_station(station_with(tmp_path, awg='driver = "keysight-33600a"\nmodel = "33500B"'))


def test_station_without_driver_opens_with_the_drivers_idn_picked() -> None:
    with open_bench("emulated") as bench:
        assert bench.drivers == {
            "awg": "keysight-33500b",
            "scope": "keysight-infiniivision",
            "source": "keithley-2400",
            "analyser": "keysight-xseries",
            "magnet": "kepco-bop",
            "gaussmeter": "lakeshore-425",
        }
        assert bench.identity()["drivers"] == bench.drivers


def test_station_naming_its_drivers_runs(tmp_path: Path) -> None:
    path = station_with(
        tmp_path,
        awg='driver = "keysight-33500b"',
        scope='driver = "keysight-infiniivision"',
        source='driver = "keithley-2400"',
    )
    with open_bench(str(path)) as bench:
        out = bench.respond(Waveform(np.zeros(64), 100e-9), {"bias_A": 7.5e-3})
        assert out.samples.shape == (64,)
        assert bench.drivers["awg"] == "keysight-33500b"
        lab = bench.lab
    assert not lab.awg.output_on and not lab.source.output_on


def test_named_driver_that_does_not_serve_the_instrument_is_refused(tmp_path: Path) -> None:
    path = station_with(tmp_path, awg='driver = "keysight-33600a"')
    with pytest.raises(ConfigError) as e:
        open_bench(str(path))
    message = str(e.value)
    assert "\n" not in message
    assert "[awg] driver = 'keysight-33600a', but the AWG at" in message
    assert "'Agilent Technologies,33522B" in message and "its driver is 'keysight-33500b'" in message


def test_the_driver_idn_picks_supplies_the_capabilities(tmp_path: Path, monkeypatch) -> None:
    from spinlab.sim_backends.emulated.awg import Emulated33500B

    monkeypatch.setattr(Emulated33500B, "IDN", "Keysight Technologies,33622A,MY-EMULATED,A.02")
    with open_bench("emulated") as bench:
        assert bench.drivers["awg"] == "keysight-33600a"
        assert bench.station.awg.model == "33600A"  # as if the file had named the driver
    path = station_with(tmp_path, awg='model = "33500B"')
    with pytest.raises(ConfigError, match=r"\[awg\] key 'model' = '33500B', but driver 'keysight-33600a'"):
        open_bench(str(path))


@pytest.mark.parametrize("source", ["keithley-2450", "keithley-6221"])
def test_idn_picking_sends_nothing_before_idn(source: str, tmp_path: Path, caplog) -> None:
    """A station without ``driver`` identifies each instrument with a bare ``*IDN?``: no other
    model's command reaches it first (a 2400 format command logs "Undefined header" on a 2450),
    so its error queue holds nothing when the station opens."""
    from spinlab import open_device
    from spinlab.instruments.opening import connect
    from spinlab.instruments.transcript import read_transcript
    from spinlab.sim_backends.emulated.lab import EmulatedLab

    lab = EmulatedLab(open_device("sim:vortex"), models={"source": source})
    station = load_station(STATIONS_DIR / "emulated.toml")
    with (
        caplog.at_level("WARNING", logger="spinlab.bench"),
        connect(station, lab.visa_library(), lab=lab, record=str(tmp_path), cleanup=(lab.close,)) as bench,
    ):
        assert bench.drivers["source"] == source
    assert "stale error" not in caplog.text
    (transcript,) = tmp_path.glob("*.jsonl")
    _, rows = read_transcript(transcript)
    first = {}
    for row in rows:
        if row["direction"] == "write":
            first.setdefault(row["resource"], row["bytes"])
    assert len(first) == len(station.resources.instruments)
    assert set(first.values()) == {b"*IDN?\n"}, first
