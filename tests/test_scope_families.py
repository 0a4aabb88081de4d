"""The second scope families on the emulated bench: the R&S RTM3004 (driver rs-rtb2000) and the
Tektronix MSO54 (driver tektronix-mso) emulators speak their SCPI (sessions, error queue, *RST,
encodings), and the whole bench runs on them: binary and ASCII reads agree, acquire records what
the default bench records, characterize finds the same threshold and relaxation time (2 %), and
the fault matrix's scope faults lose no record on them."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import pyvisa
import test_fault_matrix as fault_matrix
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.errors import InstrumentFaultError
from spinlab.instruments.bench import open_bench
from spinlab.protocols.acquire import random_multilevel
from spinlab.sim_backends.emulated import EmulatedLab
from spinlab.sim_backends.emulated.rs_scope import EmulatedRTM3000
from spinlab.sim_backends.emulated.tektronix_scope import EmulatedMSO5
from spinlab.waveform import Waveform

FAMILIES = ["rs-rtb2000", "tektronix-mso"]


def invoke(tmp_path, command: str, device: str, *extra: str) -> dict:
    args = [command, "--device", device, "--json", "--runs-dir", str(tmp_path), "--seed", "1", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the emulators' SCPI -----------------------------------------------------------------------
def test_rs_emulator_keeps_sessions_errors_and_reset_apart():
    scope = EmulatedRTM3000()
    one, two = scope.open_session(), scope.open_session()
    one.write(b"CHAN1:SCAL 0.02;:TIM:RANG 1E-6;:ACQ:POIN 5000\n")
    two.write(b"ACQ:SRAT?\n")
    assert float(two.read()) == 5e9 and one.read() == b""  # each session gets its own replies
    one.write(b"CHAN9:SCAL 1\n")
    one.write(b"FORM REAL,16\n")
    assert scope.ask("SYST:ERR?").startswith("-114") and scope.ask("SYST:ERR?").startswith("-224")
    assert scope.ask("SYST:ERR?").endswith('0,"No error"')
    scope.ask("*RST;*OPC?")
    assert float(scope.ask("CHAN1:SCAL?")) == 0.1 and scope.ask("FORM?") == "ASC,0"
    assert scope.ask("CHAN1:DATA:HEAD?").endswith(",0,1")  # nothing acquired since the reset


def test_tektronix_emulator_reports_events_and_answers_the_preamble_both_ways():
    scope = EmulatedMSO5()
    scope.ask("HOR:MODE MAN;:HOR:MODE:SAMPLER 1E9;:HOR:MODE:RECO 2000;:TRIG:A:MOD AUTO;:ACQ:STATE ON;*OPC?")
    assert scope.ask("HOR:MODE:SAMPLER?") == "+1.25000000000000E+09"  # rounded up to an offered rate
    assert scope.ask("ACQ:NUMAC?") == "1" and scope.ask("TRIG:STATE?") == "AUTO"
    fields = scope.ask("DATA:SOU CH1;:DATA:ENC SRI;:WFMO:BYT_N 2;:WFMOUTPRE?").split(";")
    assert fields[:5] == ["2", "16", "BINARY", "RI", "LSB"] and fields[6] == "2000"
    scope.ask("HEADER 1;*OPC?")
    assert scope.ask("WFMOutpre?").startswith(":WFMOUTPRE:BYT_NR 2;BIT_NR 16;ENCDG BINARY")
    scope.write(b"DATA:SOU CH9\n")
    assert scope.ask("EVMSG?").startswith("224,") and scope.ask("EVMSG?").startswith("0,")


@pytest.mark.parametrize("encoding, width", [("RIB", 2), ("RPB", 2), ("SRP", 1), ("SFP", 4), ("ASCII", 2)])
def test_tektronix_encodings_carry_the_same_volts(encoding, width):
    scope = EmulatedMSO5()
    scope.acquire = lambda times, channels, triggered: {n: 0.03 * np.sin(1e7 * times) for n in channels}
    scope.ask("CH1:SCA 0.01;:HOR:MODE MAN;:HOR:MODE:RECO 1000;:TRIG:A:MOD AUTO;:ACQ:STATE 1;*OPC?")
    scope.ask("DATA:SOU CH1;:DATA:ENC SRI;:WFMO:BYT_N 2;*OPC?")
    reference = _volts(scope, 2)
    scope.ask(f"DATA:ENC {encoding};:WFMO:BYT_N {width};*OPC?")
    step = 0.1 / 256 if width == 1 else 0.1 / 4096  # the transfer's resolution
    np.testing.assert_allclose(_volts(scope, width), reference, atol=step)


def _volts(scope: EmulatedMSO5, width: int) -> np.ndarray:
    pre = dict(
        zip(
            ("ENC", "FMT", "ORD", "NR", "YMULT", "YOFF", "YZERO"),
            scope.ask("WFMO:ENC?;BN_F?;BYT_O?;NR_P?;YMU?;YOF?;YZE?").split(";"),
        )
    )
    session = scope.open_session()
    session.write(b"CURVE?\n")
    raw = session.read()
    if pre["ENC"] == "ASCII":
        codes = np.array(raw.decode().strip().split(","), float)
    else:
        digits = int(raw[1:2])
        payload = raw[2 + digits : -1]
        kind = {"RI": "i", "RP": "u", "FP": "f"}[pre["FMT"]] + str(width)
        codes = np.frombuffer(payload, ("<" if pre["ORD"] == "LSB" else ">") + kind).astype(float)
    assert codes.size == int(pre["NR"])
    return (codes - float(pre["YOFF"])) * float(pre["YMULT"]) + float(pre["YZERO"])


# Neither QCoDeS (RTO1000, TektronixDPO7000xx) nor InstrumentKit is installed here; what such a
# driver does is plain pyvisa: block queries parsed by pyvisa itself.
def test_plain_pyvisa_clients_read_both_emulated_scopes():
    lab = EmulatedLab(open_device("sim:vortex?noise=0"), models={"scope": "rs-rtb2000"})
    rm = pyvisa.ResourceManager(lab.visa_library())
    scope = rm.open_resource(lab.SCOPE_RESOURCE, read_termination="\n", write_termination="\n")
    assert scope.query("*IDN?").startswith("Rohde&Schwarz,RTM3004")
    assert scope.query("TIM:RANG 2E-6;:ACQ:POIN 2000;:TRIG:A:MODE AUTO;:SING;*OPC?") == "1"
    start, stop, points, _ = scope.query_ascii_values("CHAN1:DATA:HEAD?")
    scope.write("FORM REAL,32;:FORM:BORD LSBF")
    volts = scope.query_binary_values("CHAN1:DATA?", datatype="f", is_big_endian=False, container=np.array)
    assert volts.size == points == 2000 and (stop - start) == pytest.approx(2e-6 * 1999 / 2000)
    assert scope.query("SYST:ERR?").endswith('"No error"')

    lab = EmulatedLab(open_device("sim:vortex?noise=0"), models={"scope": "tektronix-mso"})
    scope = pyvisa.ResourceManager(lab.visa_library()).open_resource(
        lab.SCOPE_RESOURCE, read_termination="\n", write_termination="\n"
    )
    assert scope.query("*IDN?").startswith("TEKTRONIX,MSO54")
    assert scope.query("HOR:MODE:RECO 3000;:TRIG:A:MOD AUTO;:ACQ:STOPA SEQ;:ACQ:STATE ON;*OPC?") == "1"
    scope.write("DAT:SOU CH1;:DAT:ENC RIB;:WFMO:BYT_N 2;:DAT:STAR 1;:DAT:STOP 3000")
    points, ymult = int(scope.query("WFMO:NR_P?")), float(scope.query("WFMO:YMU?"))
    codes = scope.query_binary_values("CURV?", datatype="h", is_big_endian=True, container=np.array)
    assert codes.size == points == 3000 and ymult > 0
    assert scope.query("EVMSG?").startswith("0,")


# --- the bench on them -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_binary_and_ascii_reads_of_one_capture_agree(family):
    with open_device(f"bench:emulated?scope={family}") as bench:
        drive = Waveform(np.full(200, 0.1), 1e-7, "V")
        bench.respond(drive, {"bias_A": 7.5e-3})
        binary, text = bench.scope.read_waveform(1), bench.scope.read_waveform(1, ascii=True)
        assert bench.lab.models["scope"] == family and binary.n > 1000
    assert (binary.dt_s, binary.t0_s) == (text.dt_s, text.t0_s)
    np.testing.assert_allclose(binary.samples, text.samples, rtol=1e-5, atol=1e-9)


def test_acquire_on_each_family_records_what_the_default_bench_records(tmp_path):
    """Same seed, same drives: the responses differ by each scope's noise and ADC and, at another
    sample rate (the MSO's 312.5 MSa/s), by the model's own noise drawn on another time grid."""
    runs = {}
    for family in [None, *FAMILIES]:
        device = "bench:emulated" + (f"?scope={family}" if family else "")
        summary = invoke(tmp_path, "acquire", device, "--duration-s", "2e-4", "--record-s", "5e-5")
        with h5py.File(f"{summary['run_dir']}/run.h5") as f:
            assert f.attrs["status"] == "completed" and f["response_V"].shape == (4, 500)
            runs[family] = (f["drive_V"][()], f["response_V"][()])
    drive, response = runs[None]
    for family in FAMILIES:
        np.testing.assert_array_equal(runs[family][0], drive)
        got = runs[family][1]
        np.testing.assert_allclose(got.mean(axis=1), response.mean(axis=1), rtol=0.02)
        assert np.corrcoef(got.ravel(), response.ravel())[0, 1] > 0.95, family


@pytest.mark.slow
def test_characterize_on_each_family_matches_the_default_bench(tmp_path):
    default = invoke(tmp_path, "characterize", "bench:emulated", "--bias-points", "12")
    for family in FAMILIES:
        summary = invoke(tmp_path, "characterize", f"bench:emulated?scope={family}", "--bias-points", "12")
        assert summary["threshold_A"] == pytest.approx(default["threshold_A"], rel=0.02), family
        assert summary["relaxation_time_s"] == pytest.approx(default["relaxation_time_s"], rel=0.02), family


def test_the_transfer_benchmark_reads_each_family_both_ways():
    """benchmarks/bench_transfer_families.py on a small record (its checks: same record both ways)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_transfer_families.py"
    spec = importlib.util.spec_from_file_location("bench_transfer_families", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.scope_rows(samples=20_000, repeats=1)
    assert [row["family"] for row in rows] == FAMILIES
    assert all(row["samples"] == 20_000 and row["ascii_s"] > row["binary_s"] for row in rows)


# --- faults on the new families (as in test_fault_matrix, which runs the default bench) -----------
SCOPE_FAULTS = [
    "silent@scope:at=30",
    "nan@scope:at=20",
    "drop@scope:at=60",
    "error@scope:at=60",
    "reset@scope:at=60",
    "truncate@scope:at=2",
    "length@scope:at=2",
    "corrupt@scope:at=2",
    "overrange@scope:at=2",
    "silent@scope:at=30:count=inf",
    "overrange@scope:at=2:count=inf",
]
QUICK_FAULTS = ["reset@scope:at=60", "corrupt@scope:at=2", "silent@scope:at=30:count=inf"]


def acquire_on(family: str, path: str, faults: str | None = None) -> fault_matrix.Outcome:
    """test_fault_matrix's 12-record acquisition on the emulated ``family`` scope."""
    t = time.perf_counter()
    with open_bench(
        path,
        device="sim:vortex?noise=0",
        seed=fault_matrix.SEED,
        faults=faults,
        scope_noise_V=0.0,
        scope=family,
    ) as bench:
        responses, error = [], None
        rng = np.random.default_rng(fault_matrix.SEED)
        try:
            for _ in range(fault_matrix.BATCHES):
                drives = np.stack(
                    [
                        random_multilevel(rng, fault_matrix.SAMPLES, fault_matrix.DT, (1e-7, 1e-6), 0.3)
                        for _ in fault_matrix.BIAS_A
                    ]
                )
                wave = Waveform(drives, fault_matrix.DT)
                responses.append(bench.respond(wave, {"bias_A": fault_matrix.BIAS_A}).samples)
        except InstrumentFaultError as exc:
            error = str(exc)
        outputs = (bench.lab.awg.output_on, bench.lab.source.output_on)
        retries = sum(entry["outcome"] == "retried" for entry in bench.fault_log)
        fired = len(bench.lab.fault_log.entries)
    return fault_matrix.Outcome(responses, error, retries, fired, outputs, time.perf_counter() - t)


@pytest.fixture(scope="module")
def matrix_station(tmp_path_factory):
    return fault_matrix.station(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="module")
def clean_runs(matrix_station):
    runs = {family: acquire_on(family, matrix_station) for family in FAMILIES}
    assert all(run.error is None and run.retries == 0 for run in runs.values())
    return runs


def _check_fault(family, spec, matrix_station, clean_runs):
    fault_matrix.check(spec, acquire_on(family, matrix_station, spec), clean_runs[family])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", QUICK_FAULTS)
def test_scope_faults_lose_no_record_and_leave_outputs_off(family, spec, matrix_station, clean_runs):
    _check_fault(family, spec, matrix_station, clean_runs)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", [s for s in SCOPE_FAULTS if s not in QUICK_FAULTS])
def test_scope_fault_matrix_on_the_new_families(family, spec, matrix_station, clean_runs):
    _check_fault(family, spec, matrix_station, clean_runs)
