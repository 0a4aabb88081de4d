"""Station files: the shipped ones load, and every kind of mistake is a ConfigError naming the
key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from spinlab import ConfigError, SafetyLimits
from spinlab.instruments.station import STATIONS_DIR, builtin_station, load_station

EMULATED = STATIONS_DIR / "emulated.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """The emulated station with one line replaced (the test's single mistake)."""
    text = EMULATED.read_text()
    assert old in text, old
    return write(tmp_path, text.replace(old, new, 1))


@pytest.mark.parametrize("name", ["emulated", "example_lab"])
def test_shipped_stations_load(name: str) -> None:
    station = load_station(builtin_station(name))
    assert isinstance(station.limits, SafetyLimits)
    assert station.limits.max_drive_V == 0.5
    assert station.limits.max_bias_A == pytest.approx(10e-3)


def test_emulated_station_values() -> None:
    station = load_station(builtin_station("emulated"))
    assert station.emulated
    assert station.resources.source == "GPIB0::24::INSTR"
    assert station.source is not None and station.source.default_bias_A == pytest.approx(7.5e-3)
    assert station.scope.max_points == 4_000_000


def test_example_lab_divider_gain() -> None:
    station = load_station(builtin_station("example_lab"))
    assert not station.emulated
    assert station.calibration.device_V_per_awg_V == pytest.approx(200 / 250)
    assert station.calibration.response_gain == pytest.approx(0.1)


def test_unknown_builtin_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="emulated"):
        builtin_station("nope")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_station(tmp_path / "absent.toml")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[station\nname = 1")
    with pytest.raises(ConfigError, match="lab.toml.*not valid TOML"):
        load_station(path)


def test_unknown_key_names_key_section_and_file(tmp_path: Path) -> None:
    path = edited(tmp_path, "load_ohm = 50.0", "lod_ohm = 50.0")
    with pytest.raises(ConfigError) as info:
        load_station(path)
    message = str(info.value)
    assert "lab.toml" in message and "[awg]" in message and "'lod_ohm'" in message
    assert "load_ohm" in message  # tells the user what is allowed


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, EMULATED.read_text() + "\n[magnets]\nmax_field_T = 1.0\n")
    with pytest.raises(ConfigError, match=r"unknown section \[magnets\]"):
        load_station(path)


@pytest.mark.parametrize("section", ["station", "resources", "scope", "limits"])
def test_missing_required_section(tmp_path: Path, section: str) -> None:
    data = tomllib.loads(EMULATED.read_text())
    lines = []
    skipping = False
    for line in EMULATED.read_text().splitlines():
        if line.startswith("["):
            skipping = line.strip() == f"[{section}]"
        if not skipping:
            lines.append(line)
    assert section in data
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(ConfigError, match=rf"lab.toml: missing section \[{section}\]"):
        load_station(path)


def test_missing_required_key(tmp_path: Path) -> None:
    path = edited(tmp_path, "max_bias_A = 10e-3", "")
    with pytest.raises(ConfigError, match=r"\[limits\] missing required key 'max_bias_A'"):
        load_station(path)


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("max_drive_V = 0.5", 'max_drive_V = "0.5"', "max_drive_V"),
        ("awg_channel = 1", "awg_channel = true", "awg_channel"),
        ("oversample = 5", "oversample = 4.5", "oversample"),
        ('awg = "TCPIP::127.0.0.1::5025::SOCKET"', "awg = 5025", "awg"),
    ],
)
def test_wrong_type_names_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"key '{key}' must be"):
        load_station(edited(tmp_path, old, new))


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("max_drive_V = 0.5", "max_drive_V = -0.5", "max_drive_V"),
        ("awg_channel = 1", "awg_channel = 3", "awg_channel"),
        ('trigger = "bus"', 'trigger = "immediate"', "trigger"),
        ("full_scale_V = 0.05", "full_scale_V = 0", "full_scale_V"),
        ("delay_s = 20e-9", "delay_s = -1e-9", "delay_s"),
        ("settle_s = 2e-6", "settle_s = nan", "settle_s"),
        ("load_ohm = 50.0", 'load_ohm = "open"', "load_ohm"),
    ],
)
def test_invalid_value_names_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        load_station(edited(tmp_path, old, new))
    assert "lab.toml" in str(info.value)


def test_drive_gain_and_divider_are_exclusive(tmp_path: Path) -> None:
    path = edited(
        tmp_path,
        "drive_gain = 1.0",
        "drive_gain = 1.0\nseries_resistance_ohm = 50.0\ndevice_resistance_ohm = 100.0",
    )
    with pytest.raises(ConfigError, match="either drive_gain or"):
        load_station(path)


def test_divider_needs_both_resistances(tmp_path: Path) -> None:
    path = edited(tmp_path, "drive_gain = 1.0", "series_resistance_ohm = 50.0")
    with pytest.raises(ConfigError, match="device_resistance_ohm"):
        load_station(path)


def test_default_bias_beyond_limit(tmp_path: Path) -> None:
    path = edited(tmp_path, "default_bias_A = 7.5e-3", "default_bias_A = 20e-3")
    with pytest.raises(ConfigError, match="default_bias_A.*exceeds"):
        load_station(path)


def test_limit_unreachable_through_gain(tmp_path: Path) -> None:
    # 0.5 V at the device through a 0.05 gain needs 10 V at the AWG, beyond its 2 V
    path = edited(tmp_path, "drive_gain = 1.0", "drive_gain = 0.05")
    with pytest.raises(ConfigError, match="max_output_V"):
        load_station(path)


def test_source_section_without_resource(tmp_path: Path) -> None:
    path = edited(tmp_path, 'source = "GPIB0::24::INSTR"', "")
    with pytest.raises(ConfigError, match=r"\[source\] is given but \[resources\] has no 'source'"):
        load_station(path)


def test_integral_float_accepted_for_int(tmp_path: Path) -> None:
    station = load_station(edited(tmp_path, "max_points = 4_000_000", "max_points = 4e6"))
    assert station.scope.max_points == 4_000_000 and isinstance(station.scope.max_points, int)


def test_high_impedance_load(tmp_path: Path) -> None:
    station = load_station(edited(tmp_path, "load_ohm = 50.0", 'load_ohm = "inf"'))
    assert station.awg.load == float("inf")


# --- limits know the instruments (checked before anything is opened) -------------------------------
@pytest.mark.parametrize(
    "old,new,match",
    [
        ("max_bias_A = 10e-3", "max_bias_A = 5", r"\[limits\] key 'max_bias_A' = 5 A is beyond the 1.05 A"),
        (
            "compliance_V = 2.0",
            "compliance_V = 1000",
            r"\[source\] key 'compliance_V' must be between .* 210",
        ),
        ("compliance_V = 2.0", "compliance_V = 2.0\nramp_step_A = 1e-7", r"key 'ramp_step_A'.*100000 steps"),
        (
            "compliance_V = 2.0",
            "compliance_V = 2.0\nramp_step_A = 1e-4\nramp_pause_s = 9",
            r"key 'ramp_step_A'.*100 steps \(900 s\)",
        ),
        ("compliance_V = 2.0", "compliance_V = 2.0\nramp_pause_s = 60", r"key 'ramp_pause_s'"),
        (
            "max_sample_rate_Hz = 160e6",
            "max_sample_rate_Hz = 1e9",
            r"\[awg\] key 'max_sample_rate_Hz'.*33500B",
        ),
        ("max_output_V = 2.0", "max_output_V = 10.0", r"\[awg\] key 'max_output_V'"),
        ("load_ohm = 50.0", 'model = "DG1022"', r"\[awg\] key 'model' must be one of"),
        ("load_ohm = 50.0", "memory_samples = 20_000_000", r"key 'memory_samples' must be 16 .. 16000000"),
        ("max_sample_rate_Hz = 5e9", "max_sample_rate_Hz = 10e9", r"\[scope\] key 'max_sample_rate_Hz'"),
        ("max_points = 4_000_000", "max_points = 8_000_000", r"\[scope\] key 'max_points'"),
        ("full_scale_V = 0.05", "full_scale_V = 100", r"\[scope\] key 'full_scale_V'"),
        (
            "scope_trigger_level_V = 1.0",
            "scope_trigger_level_V = 12",
            r"\[wiring\] key 'scope_trigger_level_V'",
        ),
        ("timeout_s = 10.0\n\n[wiring]", "timeout_s = 1e12\n\n[wiring]", r"\[resources\] key 'timeout_s'"),
        ("max_bias_A = 10e-3", "max_bias_A = 0.5", r"key 'compliance_V' = 2 V with .*max_bias_A = 0.5 A"),
    ],
)
def test_settings_beyond_the_instruments_are_refused(tmp_path: Path, old: str, new: str, match: str) -> None:
    text = edited(tmp_path, old, new).read_text()
    if "max_bias_A = 0.5" in new:  # 0.5 A is fine for a 2400 only up to 21 V compliance
        text = text.replace("compliance_V = 2.0", "compliance_V = 50.0")
        match = r"key 'compliance_V' = 50 V with .*max_bias_A = 0.5 A.*21 V"
    with pytest.raises(ConfigError, match=match) as info:
        load_station(write(tmp_path, text))
    assert "lab.toml" in str(info.value) and "\n" not in str(info.value)


def test_33600a_allows_its_rate_and_memory(tmp_path: Path) -> None:
    station = load_station(
        edited(
            tmp_path,
            "max_sample_rate_Hz = 160e6",
            'model = "33600A"\nmax_sample_rate_Hz = 1e9\nmemory_samples = 64_000_000',
        )
    )
    assert station.awg.max_sample_rate_Hz == 1e9 and station.awg.memory_samples == 64_000_000


def test_awg_rate_defaults_to_the_model(tmp_path: Path) -> None:
    station = load_station(edited(tmp_path, "max_sample_rate_Hz = 160e6", 'model = "33600A"'))
    assert station.awg.max_sample_rate_Hz == 1e9


def test_sections_are_frozen_and_as_dict_is_plain() -> None:
    import json

    from pydantic import ValidationError

    station = load_station(builtin_station("example_lab"))
    with pytest.raises(ValidationError, match="frozen"):
        station.awg.max_output_V = 9.0  # type: ignore[misc]
    data = station.as_dict()
    json.dumps(data)
    assert data["limits"] == {"max_drive_V": 0.5, "max_bias_A": 0.01, "max_field_T": 1.0}
    assert data["source"]["ramp_step_A"] == 0.5e-3 and data["path"].endswith("example_lab.toml")


@pytest.mark.parametrize(
    "section,value,match",
    [
        ("awg", 3, r"lab.toml: \[awg\] must be a table, got int"),
        (
            "limits",
            {"max_drive_V": True, "max_bias_A": 1e-3},
            r"key 'max_drive_V' must be a number, got bool",
        ),
        (
            "scope",
            {"max_sample_rate_Hz": 5e9, "full_scale_V": 0.05, "oversample": "5"},
            r"key 'oversample' must be an integer",
        ),
    ],
)
def test_structural_mistakes(section: str, value, match: str) -> None:
    from spinlab.instruments.station import parse_station

    data = {**tomllib.loads(EMULATED.read_text()), section: value}
    with pytest.raises(ConfigError, match=match):
        parse_station(data, "lab.toml")


@pytest.mark.parametrize(
    "section,value,match",
    [
        (
            "limits",
            {"max_drive_V": 10**400, "max_bias_A": 1e-3},
            r"\[limits\] key 'max_drive_V' is a number too large",
        ),
        (
            "scope",
            {"max_sample_rate_Hz": 5e9, "full_scale_V": 0.05, "max_points": 1e300},
            r"\[scope\] key 'max_points' must be an integer of at most 64 bits",
        ),
        (
            "scope",
            {"max_sample_rate_Hz": 5e9, "full_scale_V": 0.05, "oversample": float("inf")},
            r"key 'oversample' must be an integer, got float inf",
        ),
        ("station", {"name": 3}, r"\[station\] key 'name' must be a string, got int 3"),
        # found by the 100k fuzz campaign: a list where the AWG model goes was a TypeError
        ("awg", {"model": [], "max_output_V": 5.0}, r"\[awg\] key 'model' must be a string"),
    ],
)
def test_strict_types_name_the_key_and_what_it_got(section: str, value, match: str) -> None:
    from spinlab.instruments.station import parse_station

    data = {**tomllib.loads(EMULATED.read_text()), section: value}
    with pytest.raises(ConfigError, match=match) as info:
        parse_station(data, "lab.toml")
    assert "lab.toml" in str(info.value) and "\n" not in str(info.value)
