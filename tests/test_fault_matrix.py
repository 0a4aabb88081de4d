"""Fault matrix: every fault kind on a multi-record acquisition through ``bench:emulated``
(and on the magnet, the gaussmeter and the spectrum analyser at a field).

Each run either completes with data identical to the fault-free run with the same seed, or stops
with one :class:`~spinlab.errors.InstrumentFaultError` line, outputs off (read back from the
emulated instruments) and every batch recorded before the error intact.

Why "identical" can be asked for: the lab is noise-free (``sim:vortex?noise=0``, zero scope
noise), so a re-run record gives the same samples; a noisy lab draws new noise for a re-run,
so there the test asks that the run completes and differs from the fault-free one by no more
than two fault-free runs with different noise seeds differ from each other.

The acquisition: two batches of random multi-level drives (as ``spinlab acquire`` makes them)
at two bias currents, each drive split over three AWG records (``[awg] memory_samples =
1500``): 12 records. ``at`` places a fault inside it (an AWG
record costs about 22 AWG messages, 30 scope messages / 9 scope replies, 2 source messages).

Run as a script for the whole matrix as JSON lines: ``python tests/test_fault_matrix.py``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from spinlab import Waveform
from spinlab.errors import InstrumentFaultError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import STATIONS_DIR
from spinlab.protocols.acquire import random_multilevel

BATCHES, SAMPLES, DT = 2, 4000, 1e-7
BIAS_A = np.array([7e-3, 8e-3])
TIMEOUT_S = 0.3
SEED = 3

STORM = (
    "drop@awg:p=0.005:count=inf,silent@scope:p=0.005:count=inf,corrupt@scope:p=0.03:count=inf,"
    "reset@source:p=0.02:count=inf,nan@scope:p=0.005:count=inf,error@awg:p=0.005:count=inf"
)
#: (fault spec, expected outcome); "identical" runs must also have retried (bar the short delay)
TRANSIENT = [
    ("delay@scope:at=30:s=0.05", "identical"),  # shorter than the VISA timeout: just slower
    ("delay@awg:at=30:s=1", "identical"),  # longer: a timeout, then the late reply is stale
    ("silent@scope:at=30", "identical"),
    ("silent@awg:at=30", "identical"),
    ("silent@source:at=8", "identical"),
    ("nan@scope:at=20", "identical"),
    ("nan@source:at=8", "identical"),
    ("drop@awg:at=60", "identical"),
    ("drop@scope:at=60", "identical"),
    ("drop@source:at=16", "identical"),
    ("error@awg:at=60", "identical"),
    ("error@scope:at=60", "identical"),
    ("error@source:at=16", "identical"),
    ("reset@awg:at=60", "identical"),
    ("reset@scope:at=60", "identical"),
    ("reset@source:at=16", "identical"),
    ("truncate@scope:at=2", "identical"),
    ("length@scope:at=2", "identical"),
    ("corrupt@scope:at=2", "identical"),
    ("corrupt@awg:at=2", "identical"),
    ("overrange@scope:at=2", "identical"),
    (STORM, "identical"),  # a bad day: a few of everything, at random (seeded)
]
PERSISTENT = [
    ("silent@scope:at=30:count=inf", "error"),
    ("silent@source:at=8:count=inf", "error"),
    ("drop@awg:at=60:count=inf", "error"),
    ("length@scope:at=2:count=inf", "error"),
    ("corrupt@awg:at=2:count=inf", "error"),
    ("overrange@scope:at=2:count=inf", "error"),
    ("error@scope:at=60:count=inf", "error"),
    ("reset@source:at=16:count=inf", "error"),
    ("nan@source:at=8:count=inf", "error"),
]
#: one of each kind, and two that persist, for the default (fast) suite
QUICK = [
    "delay@awg:at=30:s=1",
    "silent@scope:at=30",
    "nan@source:at=8",
    "drop@awg:at=60",
    "error@source:at=16",
    "reset@source:at=16",
    "truncate@scope:at=2",
    "length@scope:at=2",
    "corrupt@scope:at=2",
    "corrupt@awg:at=2",
    "overrange@scope:at=2",
    "silent@scope:at=30:count=inf",
    "corrupt@awg:at=2:count=inf",
]
#: the magnet and the gaussmeter: the same acquisition at FIELD_T, set closed-loop before the first
#: record (about 30 supply messages and 10 gaussmeter replies), checked after every record
FIELD_T = 0.3
FIELD = [
    ("silent@gaussmeter:at=4", "identical"),
    ("nan@gaussmeter:at=4", "identical"),
    ("drop@gaussmeter:at=5", "identical"),
    ("drop@magnet:at=20", "identical"),
    ("nan@magnet:at=12", "identical"),
    ("error@magnet:at=20", "identical"),
    ("reset@magnet:at=40", "identical"),  # mid-ramp: the coil discharges, the field is set again
    ("silent@gaussmeter:at=4:count=inf", "error"),  # the field cannot be known: nothing recorded
    ("drop@magnet:at=20:count=inf", "error"),  # the supply gone: it cannot be parked, and says so
]
FIELD_QUICK = ["silent@gaussmeter:at=4", "reset@magnet:at=40", "silent@gaussmeter:at=4:count=inf"]
#: the spectrum analyser: one averaged trace per bias at FIELD_T (its every kind is in
#: tests/test_spectrum_plan.py). Its display noise is drawn anew on a retry, so a retried trace is
#: "within noise" of the fault-free one (the spread of two fault-free runs with other seeds)
ANALYSER = [("drop@analyser:at=10", "within noise"), ("silent@analyser:at=8:count=inf", "error")]
EXPECTED = dict(TRANSIENT + PERSISTENT + FIELD + ANALYSER)


def station(directory: Path) -> str:
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace("[awg]\n", "[awg]\nmemory_samples = 1500\n", 1)
    text = text.replace(
        "timeout_s = 10.0\n\n[wiring]", f"timeout_s = {TIMEOUT_S}\nretry_backoff_s = 0.02\n\n[wiring]"
    )
    text = text.replace("compliance_V = 2.0", "compliance_V = 2.0\nramp_step_A = 1e-3")
    path = directory / "matrix.toml"
    path.write_text(text)
    return str(path)


@dataclass
class Outcome:
    responses: list[np.ndarray]
    error: str | None
    retries: int
    fired: int
    outputs_on: tuple[bool, bool]
    wall_s: float
    #: the magnet supply's output and current once the bench closed (parked: off at 0 A)
    magnet: tuple[bool, float] = (False, 0.0)


def acquire(
    path: str,
    faults: str | None = None,
    *,
    noise: bool = False,
    seed: int = SEED,
    field_T: float | None = None,
) -> Outcome:
    device = "sim:vortex" if noise else "sim:vortex?noise=0"
    t = time.perf_counter()
    with open_bench(
        path, device=device, seed=seed, faults=faults, scope_noise_V=1e-3 if noise else 0.0
    ) as bench:
        responses, error = [], None
        rng = np.random.default_rng(SEED)
        try:
            for _ in range(BATCHES):
                drives = np.stack([random_multilevel(rng, SAMPLES, DT, (1e-7, 1e-6), 0.3) for _ in BIAS_A])
                conditions = {"bias_A": BIAS_A, **({} if field_T is None else {"field_T": field_T})}
                responses.append(bench.respond(Waveform(drives, DT), conditions).samples)
        except InstrumentFaultError as exc:
            error = str(exc)
        outputs = (bench.lab.awg.output_on, bench.lab.source.output_on)
        retries = sum(entry["outcome"] == "retried" for entry in bench.fault_log)
    magnet = bench.lab.magnet
    return Outcome(
        responses,
        error,
        retries,
        len(bench.lab.fault_log.entries),
        outputs,
        time.perf_counter() - t,
        (magnet.output_on, magnet.current_A()),
    )


def spectra(path: str, faults: str | None = None, *, seed: int = SEED) -> Outcome:
    """One analyser trace per bias around the oscillator's line, at FIELD_T (``responses``: PSDs)."""
    t = time.perf_counter()
    with open_bench(path, device="sim:vortex?noise=0", seed=seed, faults=faults) as bench:
        traces, error = [], None
        try:
            for bias_A in BIAS_A:
                conditions = {"bias_A": float(bias_A), "field_T": FIELD_T}
                f0 = float(bench.model.line(conditions).frequency_Hz)
                traces.append(bench.spectrum(conditions, np.linspace(f0 - 2e6, f0 + 2e6, 401)))
        except InstrumentFaultError as exc:
            error = str(exc)
        outputs = (bench.lab.awg.output_on, bench.lab.source.output_on)
        retries = sum(entry["outcome"] == "retried" for entry in bench.fault_log)
    magnet = bench.lab.magnet
    fired = len(bench.lab.fault_log.entries)
    wall_s = time.perf_counter() - t
    return Outcome(traces, error, retries, fired, outputs, wall_s, (magnet.output_on, magnet.current_A()))


def spread_dB(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """RMS difference of two runs' traces, in dB."""
    return float(np.sqrt(np.mean([(10 * np.log10(x / y)) ** 2 for x, y in zip(a, b)])))


def lost(outcome: Outcome, reference: Outcome) -> int:
    """Batches recorded wrong, or missing from a run that claims to have completed."""
    wrong = sum(not np.array_equal(a, b) for a, b in zip(outcome.responses, reference.responses))
    missing = 0 if outcome.error else len(reference.responses) - len(outcome.responses)
    return wrong + missing


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return station(tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="module")
def reference(path):
    clean = acquire(path)
    assert clean.error is None and len(clean.responses) == BATCHES and clean.retries == 0
    return clean


@pytest.fixture(scope="module")
def field_reference(path):
    clean = acquire(path, field_T=FIELD_T)
    assert clean.error is None and len(clean.responses) == BATCHES and clean.retries == 0
    return clean


def check(spec: str, outcome: Outcome, reference: Outcome) -> None:
    assert outcome.fired >= 1, "the fault never fired: move its 'at'"
    assert lost(outcome, reference) == 0
    assert outcome.outputs_on == (False, outcome.error is None)  # bias stays on only after success
    if EXPECTED[spec] == "identical":
        assert outcome.error is None, outcome.error
        assert outcome.retries >= (0 if spec.startswith("delay@scope") else 1)
    else:
        assert outcome.error is not None and "\n" not in outcome.error
        # the error says whether the outputs could be confirmed off: not by an output instrument
        # that drops, ignores or garbles every reply; the emulator's read-back above is the truth
        kind, _, instrument = spec.split(":")[0].partition("@")
        confirmed = not (kind in ("drop", "silent", "nan") and instrument in ("awg", "source", "magnet"))
        assert outcome.error.startswith("the ")
        assert outcome.error.endswith("; outputs are off" if confirmed else "off: switch it off by hand")
    parked = not (EXPECTED[spec] == "error" and spec.startswith(("drop@magnet", "silent@magnet")))
    if parked:  # the field ramped to park (0 T: the supply off at 0 A) once the bench closed
        assert not outcome.magnet[0] and abs(outcome.magnet[1]) <= 0.01


@pytest.mark.parametrize("spec", QUICK)
def test_fault(path, reference, spec):
    check(spec, acquire(path, spec), reference)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s, _ in TRANSIENT + PERSISTENT if s not in QUICK])
def test_fault_full_matrix(path, reference, spec):
    check(spec, acquire(path, spec), reference)


@pytest.mark.parametrize("spec", FIELD_QUICK)
def test_field_fault(path, field_reference, spec):
    check(spec, acquire(path, spec, field_T=FIELD_T), field_reference)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s, _ in FIELD if s not in FIELD_QUICK])
def test_field_fault_full_matrix(path, field_reference, spec):
    check(spec, acquire(path, spec, field_T=FIELD_T), field_reference)


@pytest.fixture(scope="module")
def analyser_reference(path):
    clean, other = spectra(path), spectra(path, seed=SEED + 1)
    assert clean.error is None and len(clean.responses) == len(BIAS_A) and clean.retries == 0
    return clean, spread_dB(clean.responses, other.responses)


@pytest.mark.parametrize("spec", [s for s, _ in ANALYSER])
def test_analyser_fault(path, analyser_reference, spec):
    """A retried trace is whole and within the display noise of the fault-free one; one that
    keeps failing ends in one line, the outputs off and the field parked."""
    reference, floor = analyser_reference
    outcome = spectra(path, spec)
    assert outcome.fired >= 1, "the fault never fired: move its 'at'"
    assert not outcome.magnet[0] and abs(outcome.magnet[1]) <= 0.01  # parked once the bench closed
    if EXPECTED[spec] == "error":
        assert outcome.error is not None and "\n" not in outcome.error
        assert outcome.error.startswith("the spectrum analyser") and outcome.error.endswith(
            "; outputs are off"
        )
        assert outcome.outputs_on == (False, False) and outcome.responses == []
    else:
        assert outcome.error is None and outcome.retries >= 1 and outcome.outputs_on == (False, True)
        assert len(outcome.responses) == len(reference.responses)  # no trace lost
        assert all(np.isfinite(trace).all() for trace in outcome.responses)
        assert spread_dB(outcome.responses, reference.responses) <= 1.5 * floor


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["drop@awg:at=60", "corrupt@scope:at=2", "reset@source:at=16"])
def test_noisy_run_completes_within_the_noise(path, spec):
    clean, other = acquire(path, noise=True), acquire(path, noise=True, seed=SEED + 1)
    faulty = acquire(path, spec, noise=True)
    assert faulty.error is None and faulty.retries >= 1 and len(faulty.responses) == len(clean.responses)
    floor = _rms(other.responses, clean.responses)
    assert np.all([np.isfinite(r).all() for r in faulty.responses])
    assert _rms(faulty.responses, clean.responses) <= 1.5 * floor


def _rms(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([(x - y).ravel() for x, y in zip(a, b)]) ** 2)))


def main() -> None:
    """Print the matrix: fault, outcome, retries, records lost, wall time."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = station(Path(directory))
        reference = acquire(path)
        print(
            json.dumps(
                {
                    "fault": "none",
                    "outcome": "completed",
                    "retries": 0,
                    "records_lost": 0,
                    "records": 6 * len(reference.responses),
                    "wall_s": round(reference.wall_s, 2),
                }
            )
        )
        field_reference = acquire(path, field_T=FIELD_T)
        rows = [(spec, reference, None) for spec, _ in TRANSIENT + PERSISTENT]
        for spec, reference, field_T in rows + [(spec, field_reference, FIELD_T) for spec, _ in FIELD]:
            outcome = acquire(path, spec, field_T=field_T)
            result = (
                "identical"
                if outcome.error is None and lost(outcome, reference) == 0
                else "completed, data differ"
                if outcome.error is None
                else "error"
            )
            print(
                json.dumps(
                    {
                        "fault": spec,
                        **({} if field_T is None else {"field_T": field_T}),
                        "outcome": result,
                        "retries": outcome.retries,
                        "fired": outcome.fired,
                        "records_lost": lost(outcome, reference),
                        "outputs_on_after": list(outcome.outputs_on),
                        "wall_s": round(outcome.wall_s, 2),
                        **({"error": outcome.error} if outcome.error else {}),
                    }
                ),
                flush=True,
            )
        clean = spectra(path)
        floor = spread_dB(clean.responses, spectra(path, seed=SEED + 1).responses)
        for spec, _ in ANALYSER:
            outcome = spectra(path, spec)
            within = outcome.error is None and spread_dB(outcome.responses, clean.responses) <= 1.5 * floor
            row = {
                "fault": spec,
                "field_T": FIELD_T,
                "outcome": "error"
                if outcome.error
                else "within noise"
                if within
                else "completed, data differ",
                "retries": outcome.retries,
                "fired": outcome.fired,
                "traces_lost": 0 if outcome.error else len(clean.responses) - len(outcome.responses),
                "outputs_on_after": list(outcome.outputs_on),
                "wall_s": round(outcome.wall_s, 2),
            }
            print(json.dumps({**row, **({"error": outcome.error} if outcome.error else {})}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
