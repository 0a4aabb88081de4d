"""The second families on the whole bench: a Tektronix AWG5200 in the AWG role, a Keithley 2450
or 6221 in the source role, each emulated and driven by spinlab's drivers through the Bench.

Every combination answers a drive as the built-in station (33500B + 2400) does; characterize and
acquire give the same threshold and relaxation time (the full matrix is slow); faults on the new
instruments are survived with no record lost and outputs off; other projects' drivers (pymeasure's
Keithley2450 and Keithley6221) work against the emulators; ``spinlab emulate --awg`` serves them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.keithley import Keithley2450 as PymeasureKeithley2450
from pymeasure.instruments.keithley import Keithley6221 as PymeasureKeithley6221
from tcp_helpers import (
    acquire_args,
    ask,
    assert_outputs_off_and_ramped,
    emulated_instruments,
    spinlab_process,
    wait_for_steps,
    write_station,
)
from test_fault_matrix import PERSISTENT, TRANSIENT
from typer.testing import CliRunner

from spinlab import Waveform
from spinlab.cli import app
from spinlab.errors import ConfigError, InstrumentFaultError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import STATIONS_DIR, load_station
from spinlab.instruments.tektronix_awg import TektronixAWG5200
from spinlab.protocols.acquire import random_multilevel
from spinlab.registry import open_device
from spinlab.sim_backends.emulated import EmulatedLab

ROOT = Path(__file__).resolve().parents[1]
AWGS = ["keysight-33500b", "tektronix-awg5200"]
SOURCES = ["keithley-2400", "keithley-2450", "keithley-6221"]
SCOPES = ["keysight-infiniivision", "rs-rtb2000", "tektronix-mso"]
NEW = [(awg, source) for awg in AWGS for source in SOURCES if (awg, source) != (AWGS[0], SOURCES[0])]
#: every combination of the families of the three roles but the built-in one (issue 22's matrix)
MATRIX = [
    (awg, scope, source)
    for awg in AWGS
    for scope in SCOPES
    for source in SOURCES
    if (awg, scope, source) != (AWGS[0], SCOPES[0], SOURCES[0])
]
QUIET = {"device": "sim:vortex?noise=0", "scope_noise_V": 0.0, "seed": 3}


def step_response(**models: str) -> np.ndarray:
    drive = np.concatenate([np.zeros(100), np.full(300, 0.12), np.zeros(300)])
    with open_bench("emulated", **QUIET, **models) as bench:
        assert bench.drivers["awg"] == models.get("awg", AWGS[0])
        assert bench.drivers["source"] == models.get("source", SOURCES[0])
        out = bench.respond(Waveform(drive, 20e-9), {"bias_A": 7.5e-3}).samples
        lab = bench.lab
    assert not lab.awg.output_on and lab.source.output_current_A() == 0.0  # outputs off on close
    return out


def test_every_family_answers_a_drive_as_the_built_in_station():
    reference = step_response()
    assert np.ptp(reference) > 1e-3  # the vortex responds: the comparison means something
    for awg, source in NEW:
        got = step_response(awg=awg, source=source)
        # both AWGs play 16-bit samples: only a rounding of the last DAC step may differ
        np.testing.assert_allclose(got, reference, atol=2e-5, err_msg=f"{awg} + {source}")


def test_the_new_families_capabilities_check_the_station(tmp_path: Path):
    text = (STATIONS_DIR / "emulated.toml").read_text()
    for old, new, match in [
        ("[awg]\n", '[awg]\ndriver = "tektronix-awg5200"\n', None),
        ("max_output_V = 2.0", 'driver = "tektronix-awg5200"', None),  # the range defaults to the model's
        ("max_sample_rate_Hz = 160e6", 'driver = "tektronix-awg5200"\nmax_sample_rate_Hz = 6e9', "AWG5200's"),
        ("max_output_V = 2.0", 'driver = "tektronix-awg5200"\nmax_output_V = 3.0', "max_output_V"),
        ("compliance_V = 2.0", 'driver = "keithley-6221"\ncompliance_V = 150', r"compliance_V.*105"),
        ("compliance_V = 2.0", 'driver = "keithley-2450"\ncompliance_V = 0.01', r"compliance_V.*0\.02"),
    ]:
        path = tmp_path / "station.toml"
        path.write_text(text.replace(old, new, 1))
        if match is None:
            awg = load_station(path).awg
            assert awg.model == "AWG5200" and awg.max_output_V == 2.0
            continue
        with pytest.raises(ConfigError, match=match) as caught:
            load_station(path)
        assert "\n" not in str(caught.value)


def test_a_station_without_driver_or_output_range_gets_the_answering_awg5200s(tmp_path: Path):
    text = (STATIONS_DIR / "emulated.toml").read_text()
    path = tmp_path / "station.toml"
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("max_output_V")))
    with open_bench(str(path), awg="tektronix-awg5200") as bench:
        assert bench.drivers["awg"] == "tektronix-awg5200"
        assert bench.station.awg.model == "AWG5200" and bench.station.awg.max_output_V == 2.0


# --- characterize and acquire on every combination (the matrix of the closing note) ---
def run_cli(tmp_path: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json", "--runs-dir", str(tmp_path), "--seed", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built_in(tmp_path_factory) -> dict:
    return run_cli(tmp_path_factory.mktemp("ref"), "characterize", "--device", "bench:emulated")


@pytest.mark.slow
@pytest.mark.parametrize(("awg", "scope", "source"), MATRIX)
def test_characterize_and_acquire_agree_with_the_built_in_station(tmp_path, built_in, awg, scope, source):
    device = f"bench:emulated?awg={awg}&scope={scope}&source={source}"
    summary = run_cli(tmp_path, "characterize", "--device", device)
    assert summary["threshold_A"] == pytest.approx(built_in["threshold_A"], rel=0.02)
    assert summary["relaxation_time_s"] == pytest.approx(built_in["relaxation_time_s"], rel=0.02)
    acquired = run_cli(
        tmp_path, "acquire", "--device", device, "--duration-s", "0.0006", "--record-s", "1e-4"
    )
    assert acquired["recordings"] >= 3


# --- faults on the new instruments -------------------------------------------------------------
MODELS = {"awg": "tektronix-awg5200", "source": "keithley-6221"}
BATCHES, SAMPLES, DT = 2, 4000, 1e-7
BIAS_A = np.array([7e-3, 8e-3])


def fault_station(directory: Path) -> str:
    """The built-in station cut into 1500-sample AWG records (12 per acquisition), with short
    timeouts and a ramped bias, as the fault matrix runs it."""
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace("[awg]\n", "[awg]\nmemory_samples = 1500\n", 1)
    text = text.replace("timeout_s = 10.0\n\n[wiring]", "timeout_s = 0.3\nretry_backoff_s = 0.02\n\n[wiring]")
    text = text.replace("compliance_V = 2.0", "compliance_V = 2.0\nramp_step_A = 1e-3")
    path = directory / "families.toml"
    path.write_text(text)
    return str(path)


def acquire(
    path: str, faults: str | None = None
) -> tuple[list[np.ndarray], str | None, int, tuple[bool, bool]]:
    with open_bench(path, faults=faults, **QUIET, **MODELS) as bench:
        responses, error = [], None
        rng = np.random.default_rng(3)
        try:
            for _ in range(BATCHES):
                drives = np.stack([random_multilevel(rng, SAMPLES, DT, (1e-7, 1e-6), 0.3) for _ in BIAS_A])
                responses.append(bench.respond(Waveform(drives, DT), {"bias_A": BIAS_A}).samples)
        except InstrumentFaultError as exc:
            error = str(exc)
        retries = sum(entry["outcome"] == "retried" for entry in bench.fault_log)
        outputs = (bench.lab.awg.output_on, bench.lab.source.output_on)
    return responses, error, retries, outputs


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    path = fault_station(tmp_path_factory.mktemp("families"))
    clean, error, retries, _ = acquire(path)
    assert error is None and retries == 0 and len(clean) == BATCHES
    return path, clean


@pytest.mark.parametrize(
    "spec",
    ["reset@awg:at=64", "corrupt@awg:at=2", "drop@awg:at=60", "reset@source:at=16", "error@source:at=16"],
)
def test_a_transient_fault_on_a_new_instrument_loses_no_record(families, spec):
    path, clean = families
    responses, error, retries, outputs = acquire(path, spec)
    assert error is None, error
    assert retries >= 1
    assert len(responses) == len(clean) and all(np.array_equal(a, b) for a, b in zip(responses, clean))
    assert outputs == (False, True)  # AWG off after each record; the bias stays on after success


@pytest.mark.parametrize("spec", ["corrupt@awg:at=2:count=inf", "silent@source:at=8:count=inf"])
def test_a_persistent_fault_stops_in_one_line_with_the_outputs_off(families, spec):
    path, clean = families
    responses, error, _, outputs = acquire(path, spec)
    assert error is not None and "\n" not in error
    assert all(np.array_equal(a, b) for a, b in zip(responses, clean))
    assert outputs == (False, False)


@pytest.mark.slow  # two CLI processes: about 25 s
def test_a_signal_on_a_new_family_station_ramps_the_bias_down_and_switches_the_awg_off(tmp_path):
    """`spinlab acquire` on an AWG5200 + 2450 station served by `spinlab emulate`, stopped by
    SIGTERM mid-acquisition: the run is interrupted, the outputs are off and the bias ramped."""
    options = ("--awg", "tektronix-awg5200", "--source", "keithley-2450", "--device", "sim:vortex?noise=0")
    with emulated_instruments(*options) as (_, emulator):
        ask(emulator["source"], "DIAG:CURR:LOG:CLE;*CLS;*OPC?")
        proc = spinlab_process(*acquire_args(write_station(tmp_path, emulator), tmp_path / "runs"))
        wait_for_steps(tmp_path / "runs", 3, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "interrupted by SIGTERM" in err and "Traceback" not in err
        assert_outputs_off_and_ramped(emulator)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "expected"), TRANSIENT + PERSISTENT)
def test_the_whole_fault_matrix_on_the_new_families(families, spec, expected):
    path, clean = families
    responses, error, _, outputs = acquire(path, spec)
    assert all(np.array_equal(a, b) for a, b in zip(responses, clean))  # nothing recorded wrong
    if expected == "identical":
        assert error is None and len(responses) == len(clean), error
        assert outputs == (False, True)
    else:
        assert error is not None and "\n" not in error and outputs == (False, False)


# --- other projects' drivers against the emulators ------------------------------------------
@pytest.fixture
def lab():
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=0, models={"source": "keithley-2450"})
    yield lab
    lab.device.close()


def test_pymeasure_keithley2450_works_against_the_emulated_2450(lab):
    smu = PymeasureKeithley2450(lab.SOURCE_RESOURCE, visa_library=lab.visa_library(), read_termination="\n")
    try:
        assert "MODEL 2450" in smu.id
        smu.apply_current(compliance_voltage=2.0)
        smu.measure_voltage()
        smu.source_current = 7.5e-3
        assert smu.source_mode == "current" and smu.source_current == pytest.approx(7.5e-3)
        smu.enable_source()
        assert smu.source_enabled
        assert lab.source.output_current_A() == pytest.approx(7.5e-3)
        assert smu.voltage == pytest.approx(0.75)  # into the 100-ohm device resistance
        smu.compliance_voltage = 0.5  # in limit now: 0.5 V / 100 ohm
        assert lab.source.output_current_A() == pytest.approx(5e-3)
        assert smu.ask(":SOUR:CURR:VLIM:TRIP?").strip() == "1"
        smu.write(":SOUR:CURR 2")  # beyond +-1.05 A: refused, the level kept
        assert int(smu.next_error[0]) == -222
        smu.ramp_to_current(0.0, steps=3, pause=0)
        smu.disable_source()
        assert not smu.source_enabled and lab.source.output_current_A() == 0.0
        assert smu.check_errors() == []
    finally:
        smu.adapter.close()


def test_pymeasure_keithley6221_works_against_the_emulated_6221():
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=0, models={"source": "keithley-6221"})
    src = PymeasureKeithley6221(lab.SOURCE_RESOURCE, visa_library=lab.visa_library(), read_termination="\n")
    try:
        assert "MODEL 6221" in src.id
        src.source_compliance = 2.0
        src.source_current = 7.5e-3
        src.source_range = 0.01
        src.enable_source()
        assert src.source_enabled and src.source_current == pytest.approx(7.5e-3)
        assert lab.source.output_current_A() == pytest.approx(7.5e-3)
        src.source_compliance = 0.5  # the load needs 0.75 V: the source limits at 0.5 V / 100 ohm
        assert lab.source.output_current_A() == pytest.approx(5e-3)
        src.write(":SOUR:CURR 0.2")  # beyond +-105 mA
        assert int(src.next_error[0]) == -222
        src.shutdown()
        assert not src.source_enabled and lab.source.output_current_A() == 0.0
        assert src.check_errors() == []
    finally:
        src.adapter.close()
        lab.device.close()


def test_the_emulated_awg5200_keeps_its_waveform_list_and_refuses_like_the_instrument():
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=0, models={"awg": "tektronix-awg5200"})
    awg = lab.awg
    try:
        awg.write(b'WLIS:WAV:NEW "w",4\n')
        awg.write(b'WLIS:WAV:DATA "w",0,4,0.5,-0.5,1,0\n')
        assert awg.ask('WLIS:WAV:LENG? "w"') == "4"
        awg.write(b'WLIS:WAV:DATA "w",0,2,0.5,2\n')  # beyond -1 .. +1
        awg.write(b'SOUR1:CASS:WAV "nope"\n')
        awg.write(b"SOUR1:VOLT:OFFS 1\n")  # DC High Bandwidth path: no offset
        awg.write(b"TRIG:IMM ATR\n")  # not running
        assert [e.split(",")[0] for e in awg.errors()] == ["-222", "-224", "-222", "-211"]
        awg.write(b'*CLS;:SOUR1:CASS:WAV "w";:OUTP1:PATH DCHV;:SOUR1:VOLT:OFFS 1;*RST\n')
        assert awg.ask("SOUR1:CASS?") == '""' and awg.ask("WLIS:SIZE?") == "1"  # *RST keeps the list
        assert awg.errors() == []
    finally:
        lab.device.close()


def test_other_projects_awg5200_commands_work_against_the_emulator():
    """The waveform-list upload users script with plain pyvisa (lower case, spaces after the
    commas, pyvisa's default little-endian float block) and the channel commands QCoDeS's
    AWG70000A/AWG5208 driver sends, through the in-process VISA library."""
    import pyvisa

    lab = EmulatedLab(open_device("sim:vortex?noise=0"), seed=0, models={"awg": "tektronix-awg5200"})
    awg = pyvisa.ResourceManager(lab.visa_library()).open_resource(lab.AWG_RESOURCE)
    awg.read_termination = awg.write_termination = "\n"
    try:
        wave = (0.5 * np.sin(np.linspace(0, 2 * np.pi, 2400, endpoint=False))).astype(np.float32)
        awg.write("WLISt:WAVeform:DELete ALL")
        awg.write('wlist:waveform:new "sine", 2400')
        awg.write_binary_values('wlist:waveform:data "sine", 0, 2400, ', wave)
        assert awg.query("*OPC?") == "1"
        assert awg.query("WLISt:LIST?").replace('"', "").split(",") == ["sine"]
        awg.write("CLOCk:SRATe 1200000000.0")
        awg.write('SOURce1:CASSet:WAVeform "sine"')
        awg.write("SOURCe1:VOLTage 0.5")
        awg.write("OUTPut1:STATe 1")
        awg.write("AWGControl:RUN")
        assert awg.query("AWGControl:RSTATe?") == "2"  # continuous run mode: running
        assert awg.query("SOURCE1:CASSet?") == '"sine"' and float(awg.query("CLOCk:SRATe?")) == 1.2e9
        back = awg.query_binary_values('WLISt:WAVeform:DATA? "sine"', datatype="f", container=np.array)
        np.testing.assert_array_equal(back, wave)
        awg.write("SOURce1:CASSet:CLEAR")
        awg.write("AWGControl:STOP")
        assert awg.query("AWGControl:RSTATe?") == "0" and awg.query("SYSTem:ERRor?") == '+0,"No error"'
    finally:
        awg.close()
        lab.device.close()


def test_spinlab_emulate_serves_the_chosen_models():
    proc = subprocess.Popen(
        [sys.executable, "-c", "from spinlab.cli import main; main()", "emulate", "--json",
         "--awg", "tektronix-awg5200", "--source", "keithley-6221", "--awg-port", "0", "--scope-port", "0",
         "--source-port", "0", "--device", "sim:vortex?noise=0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        served = json.loads(proc.stdout.readline())
        assert (
            served["models"]["awg"] == "tektronix-awg5200" and served["models"]["source"] == "keithley-6221"
        )
        awg = TektronixAWG5200(VISAAdapter(served["resources"]["awg"], visa_library="@py", timeout=2000))
        try:
            assert "AWG5204" in awg.id
            awg.upload_arb("probe", np.linspace(-0.1, 0.1, 1000), 1e8, verify=True)
            assert awg.playing_state().arb == "probe"
        finally:
            awg.adapter.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unknown_emulated_model_lists_the_known_ones():
    with pytest.raises(
        ConfigError, match="no emulated awg named 'keysight-33600a'; emulated awgs: keysight-33500b, tek"
    ):
        open_bench("emulated", awg="keysight-33600a")
