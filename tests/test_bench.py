"""The Bench: record planning and gridding (pure), and the whole chain on the emulated station:
safety checks before anything is sent, segmentation that matches the simulator, and outputs off
on every exit path."""

from __future__ import annotations

import numpy as np
import pytest

from spinlab import InstrumentError, SafetyLimitError, Waveform, WaveformError, open_device
from spinlab.errors import ConfigError, InstrumentFaultError
from spinlab.instruments.bench import MIN_RECORD_SAMPLES, Bench, average_onto_grid, open_bench, plan_records
from spinlab.instruments.station import STATIONS_DIR


# --- planning ------------------------------------------------------------------------------
def replay(plan, records_response=None):
    """Play the plan through an identity 'device' and unpack: must give the drives back."""
    timeline = np.full(plan.timeline_length, np.nan)
    for rec in plan.records:
        played = rec.samples if records_response is None else records_response(rec.samples)
        timeline[rec.start : rec.start + rec.length] = played[rec.keep : rec.keep + rec.length]
    return plan.unpack(timeline)


def test_short_drives_are_packed_into_one_record_with_settle_gaps() -> None:
    drives = np.arange(1, 4)[:, None] * np.ones((3, 50))
    plan = plan_records(drives, settle=10, overlap=20, max_record=1000)
    assert len(plan.records) == 1
    rec = plan.records[0]
    assert rec.keep == 0 and rec.samples.size == 3 * 60
    assert np.all(rec.samples[:10] == 0) and np.all(rec.samples[60:70] == 0)  # settle zeros
    np.testing.assert_array_equal(replay(plan), drives)


def test_records_end_at_drive_boundaries_when_drives_fit() -> None:
    drives = np.random.default_rng(0).normal(size=(5, 40))
    plan = plan_records(drives, settle=10, overlap=5, max_record=120)
    assert [r.length for r in plan.records] == [100, 100, 50]
    assert all(r.keep == 0 and r.start % 50 == 0 for r in plan.records)
    np.testing.assert_array_equal(replay(plan), drives)


def test_long_drive_is_split_with_replayed_overlap() -> None:
    drive = np.random.default_rng(1).normal(size=(1, 1000))
    plan = plan_records(drive, settle=16, overlap=64, max_record=300)
    assert len(plan.records) > 3
    assert all(r.samples.size <= 300 for r in plan.records)
    first, second = plan.records[:2]
    assert first.keep == 0 and second.keep == 64
    # the continuation replays exactly the 64 timeline samples before its start
    timeline = np.concatenate([np.zeros(16), drive[0]])
    np.testing.assert_array_equal(second.samples[:64], timeline[second.start - 64 : second.start])
    np.testing.assert_array_equal(replay(plan), drive)


def test_tiny_record_is_padded_to_the_awg_minimum() -> None:
    plan = plan_records(np.ones((1, 5)), settle=2, overlap=0, max_record=100)
    assert plan.records[0].samples.size == MIN_RECORD_SAMPLES
    np.testing.assert_array_equal(replay(plan), np.ones((1, 5)))


def test_overlap_must_be_shorter_than_a_record() -> None:
    with pytest.raises(Exception, match="overlap"):
        plan_records(np.ones((1, 100)), settle=0, overlap=50, max_record=50)


# --- gridding ------------------------------------------------------------------------------
def test_average_onto_grid_means_samples_inside_each_interval() -> None:
    dt, over, delay = 100e-9, 4, 30e-9
    n = 50
    truth = np.random.default_rng(2).normal(size=n)
    # scope starts 10 ns before the trigger; response of drive sample j is truth[j] during
    # [delay + j dt, delay + (j+1) dt)
    t0 = -10e-9
    t = t0 + np.arange(int((n * dt + delay + 2 * dt) / (dt / over))) * dt / over
    j = np.floor((t - delay) / dt + 1e-6).astype(int)
    values = np.where((j >= 0) & (j < n), truth[np.clip(j, 0, n - 1)], 7.0)
    values = values + np.where(np.arange(t.size) % 2 == 0, 0.01, -0.01)  # averages out
    out = average_onto_grid(values, t0, dt / over, delay, dt, n)
    np.testing.assert_allclose(out, truth, atol=1e-12)


def test_average_onto_grid_reports_uncovered_samples() -> None:
    with pytest.raises(InstrumentError, match="does not cover"):
        average_onto_grid(np.zeros(100), 0.0, 1e-9, 0.0, 10e-9, 20)


# --- the emulated station ----------------------------------------------------------------------
DT = 100e-9
BIAS = 7.5e-3
MODEL = "sim:vortex?noise=0"  # deterministic device: differences are scope noise + ADC only


def small_memory_station(tmp_path, memory_samples: int) -> str:
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace("[awg]\n", f"[awg]\nmemory_samples = {memory_samples}\n", 1)
    path = tmp_path / "small.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def bench():
    with open_bench("emulated", device=MODEL, seed=0) as b:
        yield b


def reference(drive: np.ndarray, oversample: int = 5) -> np.ndarray:
    """What the bench measures, computed on the model directly: the mean response inside each
    drive sample interval (the emulated scope takes ``oversample`` points per interval)."""
    model = open_device(MODEL)
    fine = model.respond(
        Waveform(np.repeat(np.atleast_2d(drive), oversample, axis=-1), DT / oversample), {"bias_A": BIAS}
    ).samples
    return fine.reshape(*fine.shape[:-1], -1, oversample).mean(axis=-1).reshape(drive.shape)


def random_drive(n: int, seed: int, batch: int | None = None) -> np.ndarray:
    shape = (n,) if batch is None else (batch, n)
    drive = np.random.default_rng(seed).uniform(-0.3, 0.3, shape)
    drive[..., :30] = 0.0  # both start from the zero-drive steady state
    return drive


def assert_matches(measured: np.ndarray, expected: np.ndarray) -> None:
    error = measured - expected
    # scope noise 1 mV / sqrt(5 points) ~ 0.45 mV rms, 8-bit ADC step 0.2 mV
    assert np.sqrt(np.mean(error**2)) < 0.6e-3
    assert np.max(np.abs(error)) < 3e-3


def lab_untouched(b: Bench) -> None:
    """Nothing reached the instruments: no arb, no trigger, no capture, outputs off."""
    assert b.lab.awg.arbs == {}
    assert b.lab.awg.trigger_count == 0
    assert b.lab.captures == 0
    assert not b.lab.awg.output_on
    assert not b.lab.source.output_on


def test_identity_has_every_idn(bench) -> None:
    ids = bench.identity()["instruments"]
    assert "33522B" in ids["awg"] and "DSOX4024A" in ids["scope"] and "2400" in ids["source"]
    assert bench.identity()["model"]["params"]["threshold_A"] == 5e-3


def test_response_matches_model(bench) -> None:
    drive = random_drive(3000, 1)
    measured = bench.respond(Waveform(drive, DT), {"bias_A": BIAS})
    assert measured.dt_s == DT and measured.n == drive.size
    assert_matches(measured.samples, reference(drive))


def test_packed_batch_matches_model_per_drive(bench) -> None:
    drive = random_drive(400, 2, batch=3)
    measured = bench.respond(Waveform(drive, DT), {"bias_A": BIAS}).samples
    assert bench.last_timing["records"] == 1  # packed into one AWG record
    assert_matches(measured, reference(drive))


def test_batch_with_two_biases_uses_one_record_per_bias(bench) -> None:
    drive = np.zeros((2, 200))
    out = bench.respond(Waveform(drive, DT), {"bias_A": np.array([6e-3, 9e-3])}).samples
    assert bench.last_timing["records"] == 2
    model = open_device(MODEL).params
    np.testing.assert_allclose(out.mean(axis=1), 0.1 * model.steady_power(np.array([6e-3, 9e-3])), atol=2e-4)


def test_long_drive_is_split_and_matches_model(tmp_path) -> None:
    drive = random_drive(20_000, 3)
    with open_bench(small_memory_station(tmp_path, 3000), device=MODEL, seed=0) as b:
        measured = b.respond(Waveform(drive, DT), {"bias_A": BIAS}).samples
        records = b.last_timing["records"]
    assert records >= 7
    expected = reference(drive)
    assert_matches(measured, expected)
    # no transient where records join (the replayed overlap restores the device's state)
    plan = plan_records(drive[None, :], settle=20, overlap=20, max_record=3000)
    assert len(plan.records) == records
    for rec in plan.records[1:]:
        start = rec.start - 20  # drive index where this record's kept samples begin
        window = slice(start, start + 10)
        assert np.mean(np.abs(measured[window] - expected[window])) < 1.2e-3


def test_drive_beyond_limit_sends_nothing(bench) -> None:
    with pytest.raises(SafetyLimitError, match="max_drive_V"):
        bench.respond(Waveform(np.full(100, 0.6), DT), {"bias_A": BIAS})
    lab_untouched(bench)


def test_bias_beyond_limit_sends_nothing(bench) -> None:
    with pytest.raises(SafetyLimitError, match="bias_A"):
        bench.respond(Waveform(np.zeros(100), DT), {"bias_A": 12e-3})
    lab_untouched(bench)


def test_nan_drive_is_rejected_before_the_bench(bench) -> None:
    samples = np.zeros(100)
    samples[7] = np.nan
    with pytest.raises(WaveformError, match="NaN"):
        bench.respond(Waveform(samples, DT))
    # and the backend hook itself refuses a non-finite drive if one ever got through
    with pytest.raises(SafetyLimitError, match="nothing was sent"):
        bench._respond(samples[None, :], DT, {"bias_A": np.array([BIAS])})
    lab_untouched(bench)


def test_drive_faster_than_awg_sends_nothing(bench) -> None:
    with pytest.raises(ConfigError, match="sample rate"):
        bench.respond(Waveform(np.zeros(100), 1e-9), {"bias_A": BIAS})
    lab_untouched(bench)


def test_outputs_after_a_normal_call(bench) -> None:
    bench.respond(Waveform(np.zeros(100), DT), {"bias_A": BIAS})
    assert not bench.lab.awg.output_on  # nothing drives the device between calls
    assert bench.lab.source.output_on and bench.lab.source.output_current_A() == pytest.approx(BIAS)
    bench.close()
    assert not bench.lab.awg.output_on and not bench.lab.source.output_on
    bench.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        bench.respond(Waveform(np.zeros(100), DT))


@pytest.mark.parametrize("error", [InstrumentError("scope transfer failed"), KeyboardInterrupt()])
@pytest.mark.parametrize("stage", ["wait_acquired", "read_waveform"])
def test_outputs_off_when_capture_is_interrupted(bench, monkeypatch, error, stage) -> None:
    """A failure that persists through the retries, or Ctrl-C, in the middle of a capture leaves
    every output off, and the bench works again afterwards."""
    seen = {}

    def interrupted(*args, **kwargs):
        seen["awg_on"] = bench.lab.awg.output_on
        seen["source_on"] = bench.lab.source.output_on
        raise error

    monkeypatch.setattr(type(bench.scope), stage, interrupted)  # the class: survives reconnection
    with pytest.raises(type(error)) as info:
        bench.respond(Waveform(np.zeros(300), DT), {"bias_A": BIAS})
    assert seen["source_on"]  # the failure really happened with the bias on
    assert seen["awg_on"] == (stage == "wait_acquired")  # ... and mid-burst with the AWG on
    assert not bench.lab.awg.output_on and not bench.lab.source.output_on
    if isinstance(error, InstrumentError):
        assert isinstance(info.value, InstrumentFaultError) and "\n" not in str(info.value)
        assert "oscilloscope" in str(info.value) and "3 time(s)" in str(info.value)
    monkeypatch.undo()
    out = bench.respond(Waveform(np.zeros(300), DT), {"bias_A": BIAS})
    assert out.samples.mean() == pytest.approx(0.1 * open_device(MODEL).params.steady_power(BIAS), abs=2e-4)


def test_open_bench_options() -> None:
    with pytest.raises(ConfigError, match="unknown bench option"):
        open_bench("emulated", colour="red")
    with pytest.raises(ConfigError, match="seed"):
        open_bench("emulated", seed="x")
    with pytest.raises(ConfigError, match="device model"):
        open_bench("emulated", device="bench:emulated")
    with open_device("bench:emulated?seed=3") as b:  # query options arrive as strings
        assert b.identity()["emulator"]["seed"] == 3
        assert b.model.seed == 3


def test_unreachable_instrument_is_an_instrument_error(tmp_path) -> None:
    text = (STATIONS_DIR / "emulated.toml").read_text().replace("GPIB0::24::INSTR", "GPIB0::7::INSTR")
    path = tmp_path / "wrong.toml"
    path.write_text(text)
    with pytest.raises(InstrumentError, match="GPIB0::7::INSTR"):
        open_bench(str(path))


def test_average_onto_grid_fast_and_general_paths_agree() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(size=1000)
    aligned = average_onto_grid(values, 0.0, 1e-9, 20e-9, 5e-9, 150)  # reshape path
    # record starting 0.3 points late: not aligned, so the general path; same points per bin
    general = average_onto_grid(values, 0.3e-9, 1e-9, 20e-9, 5e-9, 150)
    np.testing.assert_allclose(aligned, general, rtol=1e-12)
    np.testing.assert_allclose(aligned, values[20:770].reshape(150, 5).mean(axis=1))


def test_hardware_path_over_tcp_sockets(tmp_path) -> None:
    """``open_bench(station)`` with a real VISA library (pyvisa-py) reaching instruments over
    raw SCPI sockets: the path a real lab takes, here served by the emulators."""
    from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

    lab = EmulatedLab(open_device(MODEL), seed=0)
    with serve_tcp(lab, "127.0.0.1", 0, 0, 0, magnet=0, gaussmeter=0) as servers:
        res = servers.resources
        text = (STATIONS_DIR / "emulated.toml").read_text()
        text = text.replace('visa_library = "emulated"', 'visa_library = "@py"')
        for role, default in (
            ("awg", "TCPIP::127.0.0.1::5025::SOCKET"),
            ("scope", "TCPIP::127.0.0.1::5026::SOCKET"),
            ("source", "GPIB0::24::INSTR"),
            ("analyser", "GPIB0::20::INSTR"),
            ("magnet", lab.MAGNET_RESOURCE),
            ("gaussmeter", lab.GAUSSMETER_RESOURCE),
        ):
            text = text.replace(f'{role} = "{default}"', f'{role} = "{res[role]}"')
        path = tmp_path / "lan.toml"
        path.write_text(text)
        with open_bench(str(path)) as b:
            assert b.model is None and "33522B" in b.identity()["instruments"]["awg"]
            drive = random_drive(500, 6)
            measured = b.respond(Waveform(drive, DT), {"bias_A": BIAS}).samples
            assert lab.source.output_on and not lab.awg.output_on
        assert not lab.source.output_on
    assert_matches(measured, reference(drive))


def test_one_bias_source_error_is_retried(bench) -> None:
    from spinlab.sim_backends.emulated.scpi_syntax import ScpiError

    bench.lab.source.push_error(ScpiError(-222, "current out of range"))
    bench.respond(Waveform(np.zeros(100), DT), {"bias_A": BIAS})
    assert bench.last_timing["retries"] == 1 and "bias source reported" in bench.fault_log[0]["error"]
    assert bench.lab.source.output_current_A() == pytest.approx(BIAS)


def test_bias_source_that_keeps_reporting_errors_stops_and_switches_off(bench) -> None:
    bench.lab.inject("error@source:count=inf")
    with pytest.raises(InstrumentFaultError, match="bias source at GPIB0::24::INSTR failed 3 time.*-310"):
        bench.respond(Waveform(np.zeros(100), DT), {"bias_A": BIAS})
    assert bench.lab.captures == 0
    assert not bench.lab.awg.output_on and not bench.lab.source.output_on


def test_calibration_gains_are_applied(tmp_path) -> None:
    """AWG set for a high-Z load while the device is 50 ohm: the device sees half the programmed
    voltage (drive_gain 0.5), and a response_gain of 2 doubles the reported response. With the
    calibration in the station file the bench still reports the model's response to the drive."""
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = (
        text.replace("load_ohm = 50.0", 'load_ohm = "inf"')
        .replace("drive_gain = 1.0", "drive_gain = 0.5")
        .replace("response_gain = 1.0", "response_gain = 2.0")
    )
    path = tmp_path / "gains.toml"
    path.write_text(text)
    drive = random_drive(1000, 7)
    with open_bench(str(path), device=MODEL, seed=0) as b:
        measured = b.respond(Waveform(drive, DT), {"bias_A": BIAS}).samples
        assert b.lab.awg.offset_V + b.lab.awg.amplitude_Vpp / 2 == pytest.approx(2 * drive.max(), rel=1e-3)
    assert_matches(measured / 2, reference(drive))


def test_awg_channel_2_is_refused_before_opening(tmp_path) -> None:
    path = tmp_path / "ch2.toml"
    path.write_text(
        (STATIONS_DIR / "emulated.toml").read_text().replace("awg_channel = 1", "awg_channel = 2")
    )
    with pytest.raises(ConfigError, match="channel 1 only"):
        open_bench(str(path))


# --- bias ramp -------------------------------------------------------------------------------
def test_ramp_levels_never_step_more_than_asked() -> None:
    from spinlab.instruments.bench import ramp_levels

    levels = ramp_levels(0.0, 7.5e-3, 0.5e-3)
    assert levels.size == 15 and levels[-1] == 7.5e-3
    assert np.max(np.abs(np.diff(np.concatenate([[0.0], levels])))) <= 0.5e-3 + 1e-15
    np.testing.assert_array_equal(ramp_levels(1e-3, 2e-3, 0.0), [2e-3])  # 0: one step
    np.testing.assert_allclose(ramp_levels(2e-3, 0.0, 1e-3), [1e-3, 0.0])  # and down


def test_ramped_station_ramps_the_bias_up_and_down_on_close(tmp_path) -> None:
    text = (
        (STATIONS_DIR / "emulated.toml")
        .read_text()
        .replace("compliance_V = 2.0", "compliance_V = 2.0\nramp_step_A = 1e-3\nramp_pause_s = 0.0")
    )
    path = tmp_path / "ramped.toml"
    path.write_text(text)
    with open_bench(str(path), device=MODEL, seed=0) as b:
        b.lab.source.current_log.clear()
        b.respond(Waveform(random_drive(200, 1), DT), {"bias_A": 7.5e-3})
        up = list(b.lab.source.current_log)
        b.lab.source.current_log.clear()
    down = b.lab.source.current_log
    steps_up = np.diff([0.0] + up)
    assert up[-1] == pytest.approx(7.5e-3) and np.max(np.abs(steps_up)) <= 1e-3 + 1e-12
    assert down[-1] == 0.0 and np.max(np.abs(np.diff([7.5e-3] + down))) <= 1e-3 + 1e-12
    assert b.lab.source.output_on is False


def test_negative_ramp_step_is_a_config_error(tmp_path) -> None:
    text = (
        (STATIONS_DIR / "emulated.toml")
        .read_text()
        .replace("compliance_V = 2.0", "compliance_V = 2.0\nramp_step_A = -1e-3")
    )
    path = tmp_path / "bad_ramp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="ramp_step_A"):
        open_bench(str(path))


def test_the_record_layout_keeps_its_old_name() -> None:
    from spinlab.instruments.bench import Plan, RecordLayout

    layout = plan_records(np.ones((2, 40)), settle=4, overlap=0, max_record=1000)
    assert isinstance(layout, RecordLayout) and Plan is RecordLayout


def test_the_hardware_layer_opens_the_emulated_bench_without_importing_a_backend(tmp_path) -> None:
    """instruments/ sits below sim_backends/ (DESIGN.md): the emulated station comes from the
    ``spinlab.emulators`` entry-point group, so importing the bench loads no backend."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from spinlab.instruments.bench import open_bench
        print(sorted(m for m in sys.modules if m.startswith("spinlab.sim_backends")))
        with open_bench("emulated", seed=1) as bench:
            print(type(bench.lab).__module__)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "spinlab.sim_backends.emulated.lab"]


def test_the_emulated_station_is_registered_by_the_backends_in_the_package_metadata() -> None:
    """pyproject.toml declares the emulator the hardware layer asks for, and the installed
    metadata finds it."""
    from importlib.metadata import EntryPoint
    from pathlib import Path

    import tomllib

    from spinlab.instruments.opening import EMULATORS_GROUP, emulator_for
    from spinlab.sim_backends.emulated.station import open_emulated_bench

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][EMULATORS_GROUP]
    assert EntryPoint("emulated", declared["emulated"], EMULATORS_GROUP).load() is open_emulated_bench
    assert emulator_for("emulated") is open_emulated_bench
