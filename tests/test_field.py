"""The field as a condition of the emulated bench: set closed-loop through the real Kepco BOP and
Lake Shore 425 drivers, approached from the configured side, ramped within the coil's rate,
refused before anything moves, parked on every exit, and unreachable set points reported."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spinlab import Waveform
from spinlab.engine.signals import stops_with
from spinlab.errors import ConfigError, InstrumentFaultError, RunStopping, SafetyLimitError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.opening import connect
from spinlab.instruments.station import STATIONS_DIR, load_station
from spinlab.registry import open_device
from spinlab.sim_backends.emulated import EmulatedLab

EMULATED = STATIONS_DIR / "emulated.toml"
STATION = load_station(EMULATED)
MAGNET = STATION.magnet
RATE = MAGNET.rate_A_per_s
DRIVE = Waveform(np.full((2, 400), 0.1), 1e-7, "V")


def station_with(tmp_path: Path, **changes: str) -> Path:
    """The built-in station with ``key = value`` lines of [magnet] replaced or added."""
    text = EMULATED.read_text()
    for key, value in changes.items():
        line = next((line for line in text.splitlines() if line.startswith(f"{key} = ")), None)
        new = f"{key} = {value}"
        text = text.replace(line, new) if line else text.replace("[magnet]\n", f"[magnet]\n{new}\n")
    path = tmp_path / "magnet.toml"
    path.write_text(text)
    return path


def log_levels(lab) -> np.ndarray:
    return np.array([level for _, level in lab.magnet.current_log])


def assert_within_rate(lab) -> None:
    """No set-point step faster than the station's rate, nor larger than its ramp step."""
    times, levels = np.array(list(lab.magnet.current_log)).T
    steps = np.abs(np.diff(levels))
    assert steps.max() <= MAGNET.ramp_step_A * (1 + 1e-6)
    moving = steps > 0
    assert np.all(steps[moving] / np.diff(times)[moving] <= RATE * (1 + 1e-6)), "a ramp step beat the rate"


def test_bench_emulated_sets_the_field_closed_loop_from_below_and_parks_it():
    with open_bench("emulated") as bench:
        lab = bench.lab
        assert "field_T" in bench.condition_names
        meter = lab.roles["gaussmeter"]
        responses = []
        for field_T in (0.1, 0.3, 0.1):
            start = len(lab.magnet.current_log)
            response = bench.respond(DRIVE, {"bias_A": 7.5e-3, "field_T": field_T})
            responses.append(response.samples)
            reading = bench.field_log[-1]
            # the response says the field it was set at and the one the gaussmeter measured
            assert (
                response.meta["field_T"] == field_T
                and response.meta["field_T_measured"] == reading.measured_T
            )
            assert reading.set_T == field_T
            assert abs(reading.measured_T - field_T) <= MAGNET.settle_tolerance_T
            # read back from the emulated gaussmeter itself (and the coil's true field)
            assert abs(np.mean([meter.reading_T() for _ in range(20)]) - field_T) <= MAGNET.settle_tolerance_T
            assert abs(lab.magnet.field_T() - field_T) <= MAGNET.settle_tolerance_T
            levels = log_levels(lab)[start:]
            # approached from below: the last move onto the set point goes up, from under it
            assert levels[-1] > levels[-2]
            assert levels.min() < reading.current_A
        # 0.3 -> 0.1 T overshot below by the margin and came back up
        assert levels.min() == pytest.approx(
            bench.field_log[-1].current_A - MAGNET.approach_margin_A, abs=0.02
        )
        # the field is set once per change: a second call at 0.1 T moves nothing
        count = len(lab.magnet.current_log)
        bench.respond(DRIVE, {"bias_A": 7.5e-3, "field_T": 0.1})
        assert len(lab.magnet.current_log) == count and len(bench.field_log) == 3
        # the device saw the field: its response at 0.3 T is not the one at 0.1 T
        assert not np.allclose(responses[0], responses[1])
    assert not lab.magnet.output_on and lab.magnet.current_A() == 0.0
    assert log_levels(lab)[-1] == 0.0
    assert_within_rate(lab)


def test_a_bench_without_a_magnet_refuses_field_T(tmp_path):
    text = "\n".join(
        line
        for line in EMULATED.read_text().split("[magnet]")[0].splitlines()
        if not line.startswith(("magnet = ", "gaussmeter = "))
    )
    path = tmp_path / "no-magnet.toml"
    path.write_text(text + "\n" + EMULATED.read_text().split("[calibration]")[1].join(["[calibration]", ""]))
    with open_bench(str(path)) as bench:
        assert "field_T" not in bench.condition_names
        with pytest.raises(ConfigError, match=r"does not know condition\(s\) \['field_T'\]"):
            bench.respond(DRIVE, {"field_T": 0.1})


def test_fields_beyond_the_limits_are_refused_before_anything_moves(tmp_path):
    path = station_with(tmp_path, max_current_A="2.0")
    with open_bench(str(path)) as bench:
        lab = bench.lab
        with pytest.raises(SafetyLimitError, match=r"\[limits\] max_field_T = 1 T of .*magnet.toml; nothing"):
            bench.respond(DRIVE, {"field_T": np.array([0.1, 1.5])})
        with pytest.raises(SafetyLimitError, match=r"\[magnet\] max_current_A = 2 A of .*magnet.toml"):
            bench.respond(DRIVE, {"field_T": 0.3})
        assert not lab.magnet.current_log and not lab.magnet.output_on
        assert not lab.source.output_on  # the bias did not move either


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ramp_A_per_s": "8.0"}, r"\[magnet\] key 'ramp_A_per_s' = 8 A/s is above the coil's max_ramp"),
        ({"max_current_A": "20.0"}, r"\[magnet\] key 'max_current_A' = 20 A is beyond the supply's 12 A"),
        ({"voltage_limit_V": "50.0"}, r"\[magnet\] key 'voltage_limit_V' = 50 V is beyond the supply's"),
        ({"park_field_T": "1.5"}, r"\[magnet\] key 'park_field_T' = 1.5 T exceeds \[limits\] max_field_T"),
        ({"approach": '"sideways"'}, r"\[magnet\] key 'approach' must be 'below', 'above' or 'none'"),
    ],
)
def test_station_limits_of_the_magnet_are_one_line_naming_key_and_file(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_station(station_with(tmp_path, **changes))
    assert "magnet.toml" in str(err.value) and "\n" not in str(err.value)


def test_a_magnet_without_its_gaussmeter_or_section_is_refused(tmp_path):
    path = tmp_path / "half.toml"
    path.write_text(EMULATED.read_text().replace('gaussmeter = "GPIB0::12::INSTR"', ""))
    with pytest.raises(
        ConfigError, match=r"\[resources\] key 'gaussmeter' magnet and gaussmeter go together"
    ):
        load_station(path)
    path.write_text(EMULATED.read_text().replace("[magnet]", "[unused]").replace("T_per_A", "# T_per_A"))
    with pytest.raises(ConfigError):
        load_station(path)


def unreachable(tmp_path, field_T, lab_setup=None, **changes):
    with open_bench(str(station_with(tmp_path, **changes))) as bench:
        lab = bench.lab
        if lab_setup:
            lab_setup(lab)
        with pytest.raises(InstrumentFaultError) as err:
            bench.respond(DRIVE, {"bias_A": 7e-3, "field_T": field_T})
        # parked on the way out: bias off first, then the magnet at 0 A and off
        assert not lab.source.output_on and not lab.magnet.output_on
        assert abs(lab.magnet.current_A()) <= 1e-3 * MAGNET.max_current_A
    message = str(err.value)
    assert "\n" not in message and message.endswith("outputs are off")
    return message


def test_a_saturated_core_is_out_of_reach_in_one_line(tmp_path):
    def saturate(lab):
        lab.magnet.saturation_T = 0.2

    message = unreachable(tmp_path, 0.3, saturate, max_current_A="4.0")
    assert "out of reach" in message and "max_current_A = 4 A" in message


def test_a_drifting_probe_does_not_settle_in_one_line(tmp_path):
    def drift(lab):
        lab.roles["gaussmeter"].drift_T_per_s = 0.05

    message = unreachable(tmp_path, 0.1, drift, max_corrections="2")
    assert "did not settle at 0.1 T" in message and "after 2 corrections" in message


def test_a_supply_at_its_compliance_is_reported_in_one_line(tmp_path):
    message = unreachable(tmp_path, 0.3, voltage_limit_V="1.5", settle_timeout_s="0.5")
    assert "at its voltage compliance" in message and "voltage_limit_V = 1.5 V" in message


def test_a_stop_during_a_ramp_ends_the_ramp_and_parks_the_field():
    event = threading.Event()
    errors: list[BaseException] = []
    with open_bench("emulated") as bench:
        lab = bench.lab

        def worker():
            with stops_with(event):
                try:
                    bench.respond(DRIVE, {"field_T": 0.8})  # 8 A at 5 A/s: 1.6 s of ramp
                except BaseException as exc:  # noqa: BLE001 - the test looks at it
                    errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        while not lab.magnet.current_log or lab.magnet.current_log[-1][1] < 1.0:
            time.sleep(0.01)
        event.set()
        thread.join(timeout=30)
        assert errors and isinstance(errors[0], RunStopping)
        levels = log_levels(lab)
        top = int(np.argmax(levels))
        assert levels[top] < 2.0  # stopped well short of 8 A ...
        assert np.all(np.diff(levels[top:]) <= 0) and levels[-1] == 0.0  # ... then ramped down to park
        assert not lab.magnet.output_on
        assert_within_rate(lab)


def test_a_supply_left_on_is_ramped_from_its_present_current_when_the_bench_opens():
    """What the next open finds after a SIGKILL: the coil at 2.5 A, the supply in current mode."""
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=0)
    magnet = lab.magnet
    magnet.write(b"FUNC:MODE CURR;:VOLT 10;:CURR 2.5;:OUTP 1\n")  # a step: someone else's doing
    while magnet.current_A() < 2.5:
        time.sleep(0.01)
    magnet.current_log.clear()
    bench = connect(STATION, lab.visa_library(), lab=lab, cleanup=(lab.close,))
    try:
        levels = log_levels(lab)
        assert levels[0] == pytest.approx(2.5 - MAGNET.ramp_step_A, abs=1e-6)  # one step from 2.5 A
        assert levels[-1] == 0.0 and not magnet.output_on
        assert_within_rate(lab)
    finally:
        bench.close()


def test_calibrate_field_fits_the_coil_and_writes_only_when_asked(tmp_path):
    from typer.testing import CliRunner

    from spinlab.cli import app

    path = station_with(tmp_path, T_per_A="0.08", remanence_T="0.0")
    before = path.read_text()
    args = ["calibrate-field", "--station", str(path), "--max-current-A", "3", "--points", "4", "--json"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    fit = json.loads(shown.output.strip().splitlines()[-1])
    # the emulated coil: 0.1 T/A, 2 mT below on the rising branch
    assert fit["T_per_A"] == pytest.approx(0.1, rel=2e-3)
    assert fit["remanence_T"] == pytest.approx(-2e-3, abs=2e-4)
    assert fit["was"] == {"T_per_A": 0.08, "remanence_T": 0.0} and not fit["written"]
    assert path.read_text() == before  # never silently
    written = CliRunner().invoke(app, [*args, "--write"])
    assert written.exit_code == 0, written.output
    magnet = load_station(path).magnet
    assert magnet.T_per_A == pytest.approx(0.1, rel=2e-3) and magnet.remanence_T == pytest.approx(
        -2e-3, abs=2e-4
    )
    assert "# the coil's rate" in path.read_text()  # the file's comments kept
    refused = CliRunner().invoke(app, ["calibrate-field", "--station", "emulated", "--write"])
    assert refused.exit_code == 2 and "shipped with spinlab" in refused.output
