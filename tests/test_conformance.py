"""The conformance kit: every registered driver with an emulated model keeps its role's promises,
and a deliberately broken driver fails with the broken promise named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pymeasure.instruments import Instrument

from spinlab.conformance import BrokenPromise, check, emulator_name, promises
from spinlab.instruments.drivers import find_driver, installed_drivers
from spinlab.instruments.keithley import Keithley2400
from spinlab.instruments.kepco_bop import KepcoBOP
from spinlab.instruments.keysight_awg import Keysight33500B
from spinlab.instruments.keysight_xsa import KeysightXSeries, SpectrumTrace
from spinlab.instruments.lakeshore_gaussmeter import RANGES_T, LakeShore425
from spinlab.instruments.roles import AwgPlaying

CASES = [(name, promise) for name, spec in installed_drivers().items() for promise in promises(spec.role)]


@pytest.mark.parametrize(("driver", "promise"), CASES, ids=[f"{d}-{p}" for d, p in CASES])
def test_spinlab_drivers_keep_their_promises(driver: str, promise: str) -> None:
    if emulator_name(find_driver(driver, installed_drivers()[driver].role)) is None:
        pytest.skip(f"spinlab emulates no instrument {driver} serves (checked on hardware with --resource)")
    check(driver, promise)


# --- deliberately broken drivers ---------------------------------------------------------------
class LeavesTheOutputOn(Keysight33500B):
    def shutdown(self) -> None:  # forgets the output
        Instrument.shutdown(self)


class SendsTheRateFirst(Keysight33500B):
    def upload_arb(self, name, samples_V, sample_rate_Hz, verify=False):  # type: ignore[no-untyped-def]
        self.write(f"SOUR1:FUNC:ARB:SRAT {float(sample_rate_Hz):g}")  # before any check
        return super().upload_arb(name, samples_V, sample_rate_Hz, verify)


class RemembersWhatItSet(Keysight33500B):
    def upload_arb(self, name, samples_V, sample_rate_Hz, verify=False):  # type: ignore[no-untyped-def]
        self._set = AwgPlaying("ARB", name, self.output_load_ohm)
        return super().upload_arb(name, samples_V, sample_rate_Hz, verify)

    def playing_state(self) -> AwgPlaying:  # what it set, not what the instrument plays
        return self._set


class UncheckedCurrent(Keithley2400):
    source_current = Instrument.control(
        ":SOUR:CURR?", ":SOUR:CURR:LEV %g", "Source current (no range check)."
    )


def broken(name: str, driver: type) -> object:
    return dataclasses.replace(find_driver(name, installed_drivers()[name].role), driver=driver)


@pytest.mark.parametrize(
    ("spec", "promise", "message"),
    [
        (broken("keysight-33500b", LeavesTheOutputOn), "outputs-off-on-close", "output is still on"),
        (broken("keysight-33500b", SendsTheRateFirst), "limits-refused-before-sending", "SRAT"),
        (broken("keysight-33500b", RemembersWhatItSet), "recovery-after-reset", "a reset goes unseen"),
        (broken("keithley-2400", UncheckedCurrent), "limits-refused-before-sending", "current of 2.1 A"),
    ],
    ids=["output-left-on", "limit-sent-first", "reset-unseen", "source-limit-unchecked"],
)
def test_a_broken_driver_fails_naming_the_broken_promise(spec, promise: str, message: str) -> None:
    with pytest.raises(BrokenPromise, match=rf"broken promise '{promise.replace('-', ' ')}.*{message}"):
        check(spec, promise)


def test_a_recorded_check_replays_with_no_instrument_and_catches_a_changed_driver(tmp_path: Path) -> None:
    check("keysight-33500b", "binary-round-trip", record=tmp_path)
    recorded = tmp_path / "keysight-33500b-binary-round-trip.jsonl"
    assert recorded.exists()
    check("keysight-33500b", "binary-round-trip", transcript=tmp_path)  # the same bytes: passes
    with pytest.raises(BrokenPromise, match=r"got write b'SOUR1:FUNC:ARB:SRAT.*but the recording has"):
        check(broken("keysight-33500b", SendsTheRateFirst), "binary-round-trip", transcript=tmp_path)


def test_one_command_checks_a_labs_driver_and_names_the_broken_promise(tmp_path: Path) -> None:
    """``python -m spinlab.conformance module:SPEC``: a lab's driver, not installed, checked in one
    pytest run; the failure names the promise."""
    (tmp_path / "lab_awg.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            from pymeasure.instruments import Instrument
            from spinlab.instruments.keysight_awg import KEYSIGHT_33500B, Keysight33500B

            class LabAwg(Keysight33500B):
                def shutdown(self):
                    Instrument.shutdown(self)

            SPEC = dataclasses.replace(KEYSIGHT_33500B, name="lab-awg", driver=LabAwg)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "spinlab.conformance", "lab_awg:SPEC", "-q", "-p", "no:randomly"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 5 passed" in result.stdout
    assert "broken promise 'outputs off on close'" in result.stdout


@pytest.mark.parametrize(
    "driver",
    [
        "keysight-33500b",
        "keysight-infiniivision",
        "keithley-2400",
        "kepco-bop",
        "lakeshore-425",
        "lakeshore-475",
        "rs-fsv",
    ],
)
def test_the_kit_reaches_an_instrument_at_a_resource(driver: str) -> None:
    """The real-instrument path: pyvisa-py over a socket (here to the emulated instruments served
    on TCP); a capture, which needs the bench's trigger, and a gaussmeter check, which needs a
    known field at the probe, are skipped with the reason."""
    from spinlab.conformance import NotApplicable
    from spinlab.sim_backends.emulated.lab import EmulatedLab
    from spinlab.sim_backends.emulated.tcp_server import serve_tcp
    from spinlab.testing import Doubler

    role = installed_drivers()[driver].role
    lab = EmulatedLab(Doubler(), models={role: driver})
    with serve_tcp(lab, awg_port=0, scope_port=0, source_port=0) as servers:
        for promise in promises(role):
            try:
                check(driver, promise, resource=servers.resources[role], visa_library="@py")
            except NotApplicable as exc:
                assert (
                    (role, promise) == ("scope", "binary-round-trip")
                    and "needs a trigger" in str(exc)
                    or (role == "gaussmeter" and "needs a known field" in str(exc))
                )


# --- the field and spectrum roles --------------------------------------------------------------
class LeavesTheCoilDriven(KepcoBOP):
    def shutdown(self) -> None:  # forgets the output: the coil stays energised
        Instrument.shutdown(self)


class UncheckedCoilCurrent(KepcoBOP):
    current_setpoint_A = Instrument.control("CURR?", "CURR %.6E", "Coil current (no range check).")


class OverloadReadsAsFullScale(LakeShore425):
    def field(self) -> float:  # an OL reading passes for the range's full scale
        reply = self.ask("RDGFIELD?").strip()
        return float(reply) if "OL" not in reply.upper() else RANGES_T[self.range] / 1e-4


class AsciiTrace(KeysightXSeries):
    def read_trace(self) -> SpectrumTrace:  # a trace as text: not the binary transfer promised
        settings = self.settings()
        self.write(":FORMat:TRACe:DATA ASCii")
        power = np.array(self.values(":TRACe:DATA? TRACE1"), dtype=float)
        start = settings["center_Hz"] - settings["span_Hz"] / 2
        freqs = start + settings["span_Hz"] * np.arange(power.size) / (power.size - 1)
        return SpectrumTrace(freqs, power, settings["rbw_Hz"])


@pytest.mark.parametrize(
    ("spec", "promise", "message"),
    [
        (broken("keysight-xseries", AsciiTrace), "binary-round-trip", "no binary block of 401"),
        (
            broken("kepco-bop", LeavesTheCoilDriven),
            "outputs-off-on-close",
            "magnet supply's output is still on",
        ),
        (broken("kepco-bop", UncheckedCoilCurrent), "limits-refused-before-sending", "coil current of 24 A"),
        (broken("lakeshore-425", OverloadReadsAsFullScale), "overload-raises", "passed for"),
    ],
    ids=[
        "analyser-ascii-trace",
        "magnet-output-left-on",
        "magnet-limit-unchecked",
        "gaussmeter-overload-as-number",
    ],
)
def test_a_broken_field_or_spectrum_driver_fails_naming_the_broken_promise(
    spec, promise: str, message: str
) -> None:
    with pytest.raises(BrokenPromise, match=rf"broken promise '{promise.replace('-', ' ')}'.*{message}"):
        check(spec, promise)


def test_every_role_has_checks_beyond_identity() -> None:
    from spinlab.instruments.roles import ROLES

    assert all(len(promises(role)) >= 3 for role in ROLES), {role: list(promises(role)) for role in ROLES}


def test_an_analyser_check_recorded_replays_with_no_instrument(tmp_path: Path) -> None:
    check("rs-fsv", "binary-round-trip", record=tmp_path)
    check("rs-fsv", "binary-round-trip", transcript=tmp_path)
