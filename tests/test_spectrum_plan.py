"""`spinlab spectrum`: the line fit, and the plan recovering the auto-oscillator's closed forms
(threshold at each field, N, the linewidth's trend) on sim:vortex and on the emulated bench."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from tcp_helpers import ask, emulated_instruments
from typer.testing import CliRunner

from spinlab import ConfigError, open_device
from spinlab.cli import app
from spinlab.engine import RunEngine, build_plan
from spinlab.errors import InstrumentFaultError, RunInterrupted
from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import STATIONS_DIR
from spinlab.protocols import characterize, spectrum
from spinlab.protocols.spectrum import SpectrumConfig, fit_line, lorentzian, rounded_power_model
from spinlab.sim_backends.vortex import VortexDevice

SMALL = {"bias_A": "4e-3:9e-3:12", "survey_points": 801, "zoom_points": 201}


# --- pieces ---------------------------------------------------------------------------------------
def test_line_fit_recovers_a_lorentzian_under_multiplicative_display_noise() -> None:
    """An analyser's averaged trace: Gamma-distributed powers (16 sweeps) on a floor."""
    rng = np.random.default_rng(5)
    f = np.linspace(399e6, 401e6, 801)
    clean = lorentzian(f, 400.1e6, 100e3, 2e-9, 1e-17)
    fits = [fit_line(f, clean * rng.gamma(16, 1 / 16, f.size)) for _ in range(20)]
    width = np.array([fit["linewidth_Hz"] for fit in fits])
    assert np.mean(width) == pytest.approx(100e3, rel=0.01)
    assert np.std(width) == pytest.approx(np.mean([fit["linewidth_Hz_err"] for fit in fits]), rel=0.5)
    assert np.mean([fit["power_W"] for fit in fits]) == pytest.approx(2e-9, rel=0.01)
    assert np.mean([fit["frequency_Hz"] for fit in fits]) == pytest.approx(400.1e6, abs=2e3)
    exact = fit_line(f, clean)
    assert exact["linewidth_Hz"] == pytest.approx(100e3, rel=1e-6)
    assert exact["floor_W_per_Hz"] == pytest.approx(1e-17, rel=1e-3)


def test_the_rounded_power_model_has_the_closed_forms_on_both_sides() -> None:
    bias = np.array([2.5e-3, 7.5e-3])
    p = rounded_power_model(bias, 5e-3, 2.0, 1.0, -4.0, 0.0)
    assert p[0] == pytest.approx(1e-4 / 0.5, rel=1e-3)
    assert p[1] == pytest.approx(0.5 / 3.5, rel=2e-3)  # up to O(kT/E0)


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"bias_A": "4e-3:9e-3"}, "START:STOP:COUNT"),
        ({"bias_A": "1e-3,2e-3"}, "at least 6"),
        ({"field_T": "a:b:3"}, "START:STOP:COUNT"),
        ({"freq_start_Hz": 5e8, "freq_stop_Hz": 4e8}, "freq_stop_Hz"),
        ({"zoom_span_linewidths": 2}, "zoom_span_linewidths"),
    ],
)
def test_bad_settings_are_one_clear_line(settings, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SpectrumConfig(**settings)


def test_grids_as_typed_and_as_a_sweep_sets_them() -> None:
    config = SpectrumConfig(bias_A=["4e-3:9e-3:6"], field_T=0.3)  # --bias-A, sweep --grid field_T=0.3
    assert config.bias_A == pytest.approx((4e-3, 5e-3, 6e-3, 7e-3, 8e-3, 9e-3))
    assert config.field_T == (0.3,)
    assert build_plan("spectrum", config.to_dict()).config == config


# --- the plan on the simulator ---------------------------------------------------------------------
def test_spectrum_on_sim_vortex_recovers_the_closed_forms(tmp_path) -> None:
    progress = []
    result = RunEngine(tmp_path).run(
        spectrum.plan(field_T="0.3:0.5:3", **SMALL),
        "sim:vortex",
        subscribers=[
            lambda name, doc: (
                progress.append(doc["done"]) if name == "progress" and doc["stage"] != "figures" else None
            )
        ],
    )
    s, params = result.summary, VortexDevice().params
    for field, threshold in zip(s["fields_T"], s["threshold_A"]):
        assert threshold == pytest.approx(params.threshold_current_A(field), rel=0.03)
    assert s["N_Hz"] == pytest.approx(params.N_Hz, rel=0.10)
    # the linewidth falls with the current on both sides, as the closed forms say it does
    assert s["linewidth_log_slope_below_per_A"] < 0 and s["linewidth_log_slope_above_per_A"] < 0
    assert s["linewidth_ratio_below"] == pytest.approx(1, rel=0.02)
    assert s["linewidth_ratio_above"] == pytest.approx(1, rel=0.02)
    # df/dH from f0(B) = f0 (1 + B/B_s), less the threshold's rise (less power, less N p)
    assert 0.8 * params.f0_Hz / params.saturation_field_T < s["df_dH_Hz_per_T"] < params.f0_Hz
    assert s["operating_bias_A"] >= 1.1 * s["threshold_A"][0]
    assert "linewidths per mA" in s["operating_reason"]
    assert progress == list(range(1, 37))
    for figure in ("psd_vs_current.png", "psd_vs_field.png", "frequency_linewidth.png", "power.png"):
        assert (result.path / figure).stat().st_size > 10_000
    with h5py.File(result.run_file) as f:
        assert f["survey/psd_W_per_Hz"].shape == (3, 12, 801)
        assert f["lines/linewidth_Hz"].shape == (3, 12)
        assert f.attrs["status"] == "completed"


class _Unplugged(VortexDevice):
    """sim:vortex whose run stops (as on Ctrl-C) at its 20th spectrum."""

    calls = 0

    def spectrum(self, conditions, freqs_Hz):
        type(self).calls += 1
        if type(self).calls == 20:
            raise RunInterrupted(2)
        return super().spectrum(conditions, freqs_Hz)


def test_an_interrupted_spectrum_resumes_from_its_last_point(tmp_path) -> None:
    clean = RunEngine(tmp_path / "a").run(spectrum.plan(**SMALL), "sim:vortex")
    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path / "b").run(spectrum.plan(**SMALL), _Unplugged())
    resumed = RunEngine(tmp_path / "b").resume(caught.value.run_path, "sim:vortex", force=True)
    assert resumed.status == "completed"
    assert resumed.summary["threshold_A"] == clean.summary["threshold_A"]


def test_cli_spectrum_and_its_refusals(tmp_path) -> None:
    args = ["--runs-dir", str(tmp_path), "--set", "survey_points=401", "--set", "zoom_points=101"]
    out = CliRunner().invoke(
        app, ["spectrum", "-d", "sim:vortex", "--bias-A", "4e-3:9e-3:8", "--field-T", "0.4", "--json", *args]
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["fields_T"] == [0.4]
    assert summary["threshold_A"][0] == pytest.approx(6e-3, rel=0.03)
    out = CliRunner().invoke(app, ["run", "spectrum", "-d", "sim:vortex", "--bias-A", "2e-3:20e-3:8", *args])
    assert out.exit_code != 0 and "max_bias_A" in out.output
    out = CliRunner().invoke(app, ["spectrum", "-d", "sim:macrospin", "--bias-A", "4e-3:9e-3:8", *args])
    assert out.exit_code != 0 and "gives no spectrum" in out.output


# --- the plan on the emulated bench ---------------------------------------------------------------
def test_spectrum_on_the_emulated_bench_at_two_fields_recovers_each_threshold(tmp_path) -> None:
    """The magnet sets each field closed-loop before the analyser sweeps: the threshold at 0.2 T
    and 0.4 T is the model's 5 mA x (1 + 0.5 B / T) within 3 %, and df/dH is positive."""
    settings = {**SMALL, "bias_A": "4.5e-3:9e-3:10", "field_T": "0.2,0.4"}
    spec = RunEngine(tmp_path).run(spectrum.plan(**settings), "bench:emulated", seed=1).summary
    assert spec["fields_T"] == [0.2, 0.4]
    for found, predicted in zip(spec["threshold_A"], spec["predicted_threshold_A"]):
        assert predicted == pytest.approx(5e-3 * (1 + 0.5 * (0.2 if predicted < 5.8e-3 else 0.4)))
        assert found == pytest.approx(predicted, rel=0.03)


def test_spectrum_on_the_emulated_bench_agrees_with_the_model_and_with_characterize(tmp_path) -> None:
    """bench:emulated at its magnet's park field (0 T): the X-series trace through the real
    driver, its RF chain taken out. The threshold from the onset of power is the model's and the
    time-domain characterize's on the same emulated bench, each within 3 %."""
    spec = RunEngine(tmp_path).run(spectrum.plan(**SMALL), "bench:emulated", seed=1).summary
    char = (
        RunEngine(tmp_path)
        .run(characterize.plan(step_repeats=64, step_batches=2), "bench:emulated", seed=1)
        .summary
    )
    assert spec["fields_T"] == [0.0] and spec["predicted_threshold_A"] == [5e-3]
    assert spec["threshold_A"][0] == pytest.approx(5e-3, rel=0.03)
    assert spec["threshold_A"][0] == pytest.approx(char["threshold_A"], rel=0.03)
    assert spec["N_Hz"] == pytest.approx(100e6, rel=0.10)
    assert spec["linewidth_log_slope_below_per_A"] < 0 and spec["linewidth_log_slope_above_per_A"] < 0
    assert spec["linewidth_ratio_below"] == pytest.approx(1, rel=0.05)
    assert spec["linewidth_ratio_above"] == pytest.approx(1, rel=0.05)


def test_spinlab_emulate_serves_the_analyser() -> None:
    with emulated_instruments("--device", "sim:vortex") as (_, resources):
        assert ask(resources["analyser"], "*IDN?").startswith("Keysight Technologies,N9020B")
        assert ask(resources["analyser"], ":SENS:SWE:POIN 11;:INIT:CONT 0;:INIT;*OPC?") == "1"
        assert len(ask(resources["analyser"], ":TRAC:DATA? TRACE1").split(",")) == 11


def test_a_station_without_an_analyser_says_so(tmp_path) -> None:
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace('analyser = "GPIB0::20::INSTR"', "").split("[analyser]")[0]
    station = tmp_path / "no-analyser.toml"
    station.write_text(text)
    with pytest.raises(ConfigError, match="no spectrum analyser"):
        RunEngine(tmp_path).run(spectrum.plan(**SMALL), f"bench:{station}")
    broken = tmp_path / "orphan.toml"
    broken.write_text(text + "\n[analyser]\naverages = 4\n")
    with pytest.raises(ConfigError, match=r"\[analyser\] is given but \[resources\] has no 'analyser'"):
        RunEngine(tmp_path).run(spectrum.plan(**SMALL), f"bench:{broken}")


@pytest.mark.parametrize("fault", ["nan@analyser", "reset@analyser:at=17", "error@analyser:at=3"])
def test_a_faulty_analyser_trace_is_retried_not_recorded(fault) -> None:
    """Fault injection reaches the analyser: a NaN reply, a reset between configuring and
    sweeping (the trace would hold other frequencies) or an error in its queue is retried and
    the trace that comes back is whole."""
    with open_device("bench:emulated?seed=2") as bench:
        bench.lab.inject(fault)
        f0 = float(bench.model.line({"bias_A": 8e-3}).frequency_Hz)
        freqs = np.linspace(f0 - 2e6, f0 + 2e6, 401)
        psd = bench.spectrum({"bias_A": 8e-3}, freqs)
        outcomes = [entry["outcome"] for entry in bench.fault_log]
    assert outcomes == ["retried"]
    assert bench.lab.fault_log.entries and np.all(np.isfinite(psd))
    assert fit_line(freqs, psd)["frequency_Hz"] == pytest.approx(f0, abs=30e3)  # FWHM ~ 600 kHz


# --- the analyser's row of the fault matrix ----------------------------------------------------------
ANALYSER_TRANSIENT = [
    "delay@analyser:at=8:s=1",
    "silent@analyser:at=8",
    "drop@analyser:at=10",
    "truncate@analyser",
    "length@analyser",
    "corrupt@analyser",
]
ANALYSER_PERSISTENT = ["silent@analyser:at=8:count=inf", "length@analyser:count=inf"]


@pytest.fixture(scope="module")
def quick_station(tmp_path_factory) -> str:
    """The emulated station with a short VISA timeout, so a lost reply costs 0.3 s."""
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace("timeout_s = 10.0\n\n[wiring]", "timeout_s = 0.3\nretry_backoff_s = 0.02\n\n[wiring]")
    path = tmp_path_factory.mktemp("analyser-faults") / "quick.toml"
    path.write_text(text)
    return str(path)


def _faulty_spectrum(station: str, spec: str):
    with open_bench(station, device="sim:vortex", seed=2, faults=spec) as bench:
        f0 = float(bench.model.line({"bias_A": 8e-3}).frequency_Hz)
        freqs = np.linspace(f0 - 2e6, f0 + 2e6, 401)
        try:
            psd, error = bench.spectrum({"bias_A": 8e-3}, freqs), None
        except InstrumentFaultError as exc:
            psd, error = None, str(exc)
        retries = sum(entry["outcome"] == "retried" for entry in bench.fault_log)
        return bench, freqs, f0, psd, error, retries


@pytest.mark.parametrize("spec", ANALYSER_TRANSIENT)
def test_an_analyser_fault_is_retried_and_the_trace_is_whole(quick_station, spec) -> None:
    bench, freqs, f0, psd, error, retries = _faulty_spectrum(quick_station, spec)
    assert bench.lab.fault_log.entries, "the fault never fired: move its 'at'"
    assert error is None and retries >= 1
    assert np.all(np.isfinite(psd)) and fit_line(freqs, psd)["frequency_Hz"] == pytest.approx(f0, abs=30e3)


@pytest.mark.parametrize("spec", ANALYSER_PERSISTENT)
def test_an_analyser_that_keeps_failing_ends_in_one_line_outputs_off(quick_station, spec) -> None:
    bench, _, _, psd, error, _ = _faulty_spectrum(quick_station, spec)
    assert psd is None and error is not None and "\n" not in error
    assert error.startswith("the spectrum analyser") and error.endswith("; outputs are off")
    assert not bench.lab.source.output_on and not bench.lab.awg.output_on
