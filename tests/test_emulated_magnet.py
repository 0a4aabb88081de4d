"""The emulated magnet supply + coil and gaussmeter, through the real driver stack (spinlab's and
pymeasure's drivers over the in-process pyvisa backend): the coil's finite ramp rate and
compliance, the iron core's remanence by approach side, the gaussmeter's noise, range and
overload, the set-point log with times, and injected faults."""

import threading
import time

import numpy as np
import pytest
import pyvisa
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.kepco import KepcoBOP3612
from pymeasure.instruments.lakeshore import LakeShore425 as PymeasureLakeShore425

from spinlab.errors import InstrumentError
from spinlab.instruments.kepco_bop import KepcoBOP
from spinlab.instruments.lakeshore_gaussmeter import LakeShore425
from spinlab.sim_backends.emulated.faults import Fault, FaultInjector, FaultLog
from spinlab.sim_backends.emulated.gaussmeter import EmulatedLakeShore425
from spinlab.sim_backends.emulated.magnet import MAX_LOG_ENTRIES, EmulatedKepcoMagnet
from spinlab.sim_backends.emulated.visa_backend import EmulatedVisaLibrary

CAL_T_PER_A = 0.1
REMANENCE_T = 2e-3
NOISE_T = 2e-5


class Rig:
    """A magnet supply and a gaussmeter on one lock, reachable through pyvisa (what the
    emulated lab will hold once the magnet role is wired in)."""

    MAGNET = "GPIB0::6::INSTR"
    GAUSSMETER = "ASRL3::INSTR"

    def __init__(self, clock=time.monotonic, drift_T_per_s=0.0, **coil):
        lock = threading.RLock()
        coil = {"calibration_T_per_A": CAL_T_PER_A, "remanence_T": REMANENCE_T, **coil}
        self.magnet = EmulatedKepcoMagnet(clock=clock, lock=lock, **coil)
        self.gaussmeter = EmulatedLakeShore425(
            self.magnet.field_T, noise_T=NOISE_T, seed=1, drift_T_per_s=drift_T_per_s, clock=clock, lock=lock
        )
        self.instruments = {self.MAGNET: self.magnet, self.GAUSSMETER: self.gaussmeter}
        self.library = EmulatedVisaLibrary.for_lab(self)

    def open(self, driver, resource, **kwargs):
        return driver(resource, visa_library=self.library, timeout=500, **kwargs)


class SteppedClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def rig():
    rig = Rig(inductance_H=0.2, resistance_ohm=1.0)
    bop, meter = rig.open(KepcoBOP, rig.MAGNET), rig.open(LakeShore425, rig.GAUSSMETER)
    yield rig, bop, meter
    for driver in (bop, meter):
        driver.adapter.close()


def ramp(bop, target_A, rate_A_per_s, step_A=0.05):
    """Step the set point toward ``target_A`` at ``rate_A_per_s`` (what a magnet controller does)."""
    start = bop.current_setpoint_A
    steps = max(1, int(np.ceil(abs(target_A - start) / step_A)))
    for level in np.linspace(start, target_A, steps + 1)[1:]:
        time.sleep(abs(target_A - start) / steps / rate_A_per_s)
        bop.current_setpoint_A = float(level)
    while abs(bop.current_A - target_A) > 1e-6:
        time.sleep(0.005)


def mean_field_T(meter, n=20):
    return float(np.mean([meter.field_T() for _ in range(n)]))


# --- through the drivers -------------------------------------------------------------------------
def test_ramp_to_0_3_T_reads_the_calibrated_field_within_noise(rig):
    magnet, bop, meter = rig[0].magnet, rig[1], rig[2]
    assert bop.id.startswith("KEPCO,BOP 36-12") and meter.id.startswith("LSCI,MODEL425")
    bop.enter_current_mode(voltage_limit_V=20.0)
    meter.unit = "T"
    meter.auto_range = True
    ramp(bop, 3.0, rate_A_per_s=20.0)
    tolerance = 4 * NOISE_T / np.sqrt(20) + 1e-5  # noise of the mean + one display digit
    # approached from below: the core's remanent field is on the low side
    assert mean_field_T(meter) == pytest.approx(0.3 - REMANENCE_T, abs=tolerance)
    assert meter.range_T() == pytest.approx(0.35)  # auto range picked 3.5 kG
    ramp(bop, 3.5, rate_A_per_s=20.0)
    ramp(bop, 3.0, rate_A_per_s=20.0)
    assert mean_field_T(meter) == pytest.approx(0.3 + REMANENCE_T, abs=tolerance)  # from above
    state = bop.output_state()
    assert state.on and state.mode == "CURR" and state.current_A == pytest.approx(3.0)
    # every step was logged with its time: none faster than the ramp asked for
    log = np.array([float(x) for x in magnet.ask("DIAG:CURR:LOG?").split(",")]).reshape(-1, 2)
    assert log[-1, 1] == pytest.approx(3.0) and len(log) > 60
    rates = np.abs(np.diff(log[:, 1])) / np.diff(log[:, 0])
    assert rates.max() <= 20.0 * 1.05
    assert bop.check_errors() == []


def test_the_coil_limits_dI_dt_to_the_voltage_limit_over_L():
    clock = SteppedClock()
    rig = Rig(clock=clock, inductance_H=0.5, resistance_ohm=1.0)
    bop = rig.open(KepcoBOP, rig.MAGNET)
    bop.enter_current_mode(voltage_limit_V=10.0)
    bop.current_setpoint_A = 3.0
    tau = 0.5 / 1.0
    for t in (0.05, 0.1, 0.15):
        clock.t = t
        current = bop.current_A
        assert current == pytest.approx(10.0 * (1 - np.exp(-t / tau)))  # L dI/dt = V - R I
        assert current <= 10.0 / 0.5 * t  # never faster than V/L
        assert bop.voltage_V == pytest.approx(10.0)  # in compliance while it ramps
    clock.t = 1.0
    assert bop.current_A == pytest.approx(3.0) and bop.voltage_V == pytest.approx(3.0)  # R I
    # output off: the current decays through R with L/R, it does not jump to 0
    bop.output_enabled = False
    clock.t = 1.05
    assert bop.current_A == pytest.approx(3.0 * np.exp(-0.05 / tau))
    clock.t = 30.0
    assert bop.current_A == pytest.approx(0.0, abs=1e-9)


def test_a_set_point_beyond_compliance_is_never_reached():
    clock = SteppedClock()
    rig = Rig(clock=clock, inductance_H=0.5, resistance_ohm=2.0)
    bop = rig.open(KepcoBOP, rig.MAGNET)
    bop.enter_current_mode(voltage_limit_V=4.0)  # at most 4 V / 2 ohm = 2 A
    bop.current_setpoint_A = 3.0
    clock.t = 100.0
    assert bop.current_A == pytest.approx(2.0) and bop.current_setpoint_A == 3.0
    assert bop.voltage_V == pytest.approx(4.0)


def test_remanence_depends_on_the_approach_side():
    clock = SteppedClock()
    rig = Rig(clock=clock)
    magnet = rig.magnet
    magnet.write(b"FUNC:MODE CURR;:VOLT 36;:OUTP 1\n")
    fields = []
    for level in (2.0, 3.0, 2.0, 0.0, -1.0, 0.0):
        magnet.write(f"CURR {level}\n".encode())
        clock.t += 10.0
        fields.append(magnet.field_T())
    rising, falling = fields[0], fields[2]
    assert rising == pytest.approx(0.2 - REMANENCE_T) and falling == pytest.approx(0.2 + REMANENCE_T)
    assert fields[3] == pytest.approx(REMANENCE_T)  # remanent field after a positive excursion
    assert fields[5] == pytest.approx(-REMANENCE_T)  # and after a negative one
    assert float(magnet.ask("DIAG:FIELD?")) == pytest.approx(fields[5])
    times = [float(x) for x in magnet.ask("DIAG:CURR:LOG?").split(",")[::2]]
    assert times == pytest.approx([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    magnet.write(b"DIAG:CURR:LOG:CLE\n")
    assert magnet.ask("DIAG:CURR:LOG?") == ""


def test_a_saturated_core_cannot_reach_its_linear_field():
    clock = SteppedClock()
    rig = Rig(clock=clock, saturation_T=0.5, remanence_T=0.0)
    bop = rig.open(KepcoBOP, rig.MAGNET)
    bop.enter_current_mode(voltage_limit_V=36.0)
    fields = []
    for level in (1.0, 5.0, 12.0):
        bop.current_setpoint_A = level
        clock.t += 10.0
        fields.append(rig.magnet.field_T())
    assert fields[0] == pytest.approx(0.5 * np.tanh(0.2))  # 1.3 % below the calibration
    assert fields[1] < 0.4 and fields[2] < 0.5  # 1.2 T asked at full current: never there


def test_a_drifting_probe_and_zprobe():
    clock = SteppedClock()
    rig = Rig(clock=clock, drift_T_per_s=1e-4)
    meter = rig.open(LakeShore425, rig.GAUSSMETER)
    meter.unit = "T"
    clock.t = 100.0  # no field, but the probe's offset has drifted by 10 mT
    assert meter.field_T() == pytest.approx(0.01, abs=5 * NOISE_T)
    meter.write("ZPROBE")
    assert meter.field_T() == pytest.approx(0.0, abs=5 * NOISE_T)


def test_gaussmeter_noise_range_and_overload(rig):
    magnet, bop, meter = rig[0].magnet, rig[1], rig[2]
    bop.enter_current_mode(voltage_limit_V=36.0)
    bop.current_setpoint_A = 3.0
    while bop.current_A != 3.0:
        time.sleep(0.005)
    meter.unit = "T"
    meter.reading_mode = (1, 1, 1)
    assert meter.reading_mode == (1, 1, 1) and meter.probe_type == 40
    readings = np.array([meter.field_T() for _ in range(400)])
    assert readings.std() == pytest.approx(NOISE_T, rel=0.2)
    meter.range = 2  # 350 G full scale: 0.3 T overloads it
    assert meter.auto_range is False
    with pytest.raises(InstrumentError, match="overloaded"):
        meter.field_T()
    meter.unit = "G"
    meter.auto_range = True
    assert meter.field_T() == pytest.approx(0.298, abs=1e-4) and meter.range == 3
    assert magnet.errors() == [] and rig[0].gaussmeter.errors() == []


def test_bad_commands_are_refused_and_queued(rig):
    r, bop, meter = rig
    bop.write("CURR 13")  # beyond +-12 A: refused, the set point stays
    bop.write("FUNC:MODE WATT")
    assert [code for code, _ in bop.check_errors()] == [-222, -224]
    assert bop.current_setpoint_A == 0.0
    meter.write("RANGE 7")
    assert r.gaussmeter.range == 4 and r.gaussmeter.errors()[0].startswith("-222")


# --- other projects' drivers ---------------------------------------------------------------------
def test_pymeasures_kepco_and_lakeshore_drivers_work_against_the_emulators():
    rig = Rig(inductance_H=0.05)
    bop = KepcoBOP3612(VISAAdapter(rig.MAGNET, visa_library=rig.library, timeout=500))
    meter = PymeasureLakeShore425(
        VISAAdapter(
            rig.GAUSSMETER,
            visa_library=rig.library,
            timeout=500,
            read_termination="\n",
            write_termination="\n",
        )
    )
    assert bop.id.startswith("KEPCO")
    bop.operating_mode = "CURR"
    assert bop.operating_mode == "CURR"
    bop.voltage_setpoint = 20
    bop.current_setpoint = 2.0
    bop.output_enabled = True
    assert bop.output_enabled is True
    assert bop.current_setpoint == pytest.approx(2.0)
    deadline = time.monotonic() + 2
    while bop.current != pytest.approx(2.0) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert bop.current == pytest.approx(2.0) and bop.voltage == pytest.approx(2.0)
    assert bop.confidence_test == 0 and bop.bop_test == 0
    bop.beep()
    meter.unit = "G"
    assert meter.unit == "G"
    meter.auto_range()
    meter.dc_mode()
    assert meter.mode == (1, 0, 1)
    assert meter.field == pytest.approx(2000 - 20, abs=1.0)
    meter.range = 350
    assert meter.range == 350
    assert rig.magnet.errors() == [] and rig.gaussmeter.errors() == []


# --- faults --------------------------------------------------------------------------------------
def _inject(instrument, *faults):
    instrument.faults = FaultInjector(enumerate(faults), 0, FaultLog())


def test_a_nan_level_from_the_supply_is_refused(rig):
    magnet, bop = rig[0].magnet, rig[1]
    _inject(magnet, Fault("nan", "magnet", at=3))  # the third numeric reply: the set point
    with pytest.raises(InstrumentError, match="current set point"):
        bop.output_state()
    assert bop.output_state().setpoint_A == 0.0  # one-shot: the next read is clean


def test_a_nan_field_reading_is_refused(rig):
    r, meter = rig[0], rig[2]
    _inject(r.gaussmeter, Fault("nan", "gaussmeter"))
    with pytest.raises(InstrumentError, match="not a number"):
        meter.field()
    assert abs(meter.field()) < 1.0  # one-shot: the next reading is clean (in gauss)


def test_a_dropped_gaussmeter_connection_fails_loudly_and_reopens(rig):
    r, meter = rig[0], rig[2]
    _inject(r.gaussmeter, Fault("drop", "gaussmeter"))
    with pytest.raises(pyvisa.errors.VisaIOError, match="CONN_LOST"):
        meter.field_T()
    again = r.open(LakeShore425, r.GAUSSMETER)
    assert abs(again.field_T()) < 1e-3
    again.adapter.close()


def test_a_reset_glitch_turns_the_output_off_and_the_coil_discharges():
    clock = SteppedClock()
    rig = Rig(clock=clock, inductance_H=0.5)
    bop = rig.open(KepcoBOP, rig.MAGNET)
    bop.enter_current_mode(voltage_limit_V=20.0)
    bop.current_setpoint_A = 2.0
    clock.t = 10.0
    _inject(rig.magnet, Fault("reset", "magnet"))
    state = bop.output_state()  # the reset lands before this read
    assert state.on is False and state.mode == "VOLT" and state.current_A == pytest.approx(2.0)
    clock.t = 30.0
    assert bop.current_A == pytest.approx(0.0, abs=1e-9)


def test_the_set_point_log_is_bounded_and_fits_one_reply():
    clock = SteppedClock()
    magnet = EmulatedKepcoMagnet(clock=clock)
    for i in range(MAX_LOG_ENTRIES + 5):
        clock.t = i * 1e-3
        magnet.write(f"CURR {i * 1e-4 - 6:.4f}\n".encode())
    reply = magnet.ask("DIAG:CURR:LOG?")
    assert len(reply) < magnet.max_reply_bytes and magnet.errors() == []
    first_t, first_A = (float(x) for x in reply.split(",")[:2])
    assert len(magnet.current_log) == MAX_LOG_ENTRIES and first_t == pytest.approx(5e-3)
    assert first_A == pytest.approx(5e-4 - 6)


def test_a_new_connection_finds_the_coil_where_it_is_mid_ramp():
    """What a controller opening after a crash sees: the programmed set point and the present
    current, from which it ramps (the emulator keeps the coil's state across connections)."""
    clock = SteppedClock()
    rig = Rig(clock=clock, inductance_H=2.0, resistance_ohm=1.0)
    bop = rig.open(KepcoBOP, rig.MAGNET)
    bop.enter_current_mode(voltage_limit_V=5.0)
    bop.current_setpoint_A = 3.0
    clock.t = 0.5
    _inject(rig.magnet, Fault("drop", "magnet"))  # the controller's connection dies
    bop.current_setpoint_A = 0.0  # lost with the connection
    with pytest.raises(pyvisa.errors.VisaIOError):
        bop.current_A  # noqa: B018 - the read is the test
    clock.t = 0.6
    again = rig.open(KepcoBOP, rig.MAGNET)
    state = again.output_state()
    assert state.on and state.mode == "CURR" and state.setpoint_A == 3.0
    assert state.current_A == pytest.approx(5.0 * (1 - np.exp(-0.6 / 2.0)))  # 1.3 A, still ramping
    again.adapter.close()
