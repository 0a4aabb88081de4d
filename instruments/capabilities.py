"""What the supported instruments can do: one table for the drivers and the station loader.

The loader checks a station's limits against these before anything is opened, so an impossible
setting is a :class:`~spinlab.errors.ConfigError` naming the key, not a driver ``ValueError``
halfway through a run; the drivers validate every command against the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AwgModel:
    """A Keysight 33500B/33600A family: arb point rate, arb memory (standard and with the
    MEM option) and the output range the driver keeps to (``|offset| + Vpp/2`` into 50 ohm)."""

    family: str
    max_sample_rate_Hz: float
    memory_samples: int
    memory_samples_mem: int
    max_peak_V: float = 5.0


AWG_MODELS = {
    "33500B": AwgModel("33500B", 160e6, 1_000_000, 16_000_000),
    "33600A": AwgModel("33600A", 1e9, 4_000_000, 64_000_000),
}


def awg_model_of(idn_model: str) -> AwgModel | None:
    """The family of an ``*IDN?`` model field (``"33522B"`` -> 33500B), or None."""
    model = idn_model.strip().upper()
    for prefix, family in (("335", "33500B"), ("336", "33600A")):
        if model.startswith(prefix):
            return AWG_MODELS[family]
    return None


@dataclass(frozen=True)
class ScopeModel:
    """An oscilloscope family (defaults: Keysight InfiniiVision 4000 X, 5 GSa/s, 4 Mpts): rates,
    memory and front-end ranges; full scale is ``vertical_divisions`` times the V/div scale."""

    max_sample_rate_Hz: float = 5e9
    memory_points: int = 4_000_000
    min_points: int = 100
    scale_V_per_div: tuple[float, float] = (1e-3, 5.0)  # full scale is 8 divisions
    max_offset_V: float = 40.0
    max_trigger_level_V: float = 8.0
    vertical_divisions: int = 8
    family: str = "InfiniiVision"


INFINIIVISION = ScopeModel()


@dataclass(frozen=True)
class SourceModel:
    """A Keithley 2400 SourceMeter: +-1.05 A up to 21 V, +-105 mA up to 210 V."""

    max_current_A: float = 1.05
    max_voltage_V: float = 210.0
    high_power_current_A: float = 0.105  # above this current ...
    high_power_max_V: float = 21.0  # ... the compliance voltage tops out here
    min_compliance_V: float = 0.2e-3


KEITHLEY_2400 = SourceModel()


@dataclass(frozen=True)
class AnalyserModel:
    """A swept spectrum analyser: frequency range, trace points, resolution bandwidths, and the
    noise bandwidth of its RBW filter per hertz of RBW (Gaussian filters: 1.0645), which turns a
    trace's power in the RBW into a power spectral density."""

    family: str
    max_frequency_Hz: float
    max_points: int
    rbw_range_Hz: tuple[float, float]
    reference_level_range_dBm: tuple[float, float] = (-170.0, 30.0)
    noise_bandwidth_per_rbw: float = 1.0645


#: Keysight N9020B MXA (option 526), and R&S FSV (FSV30: 10 Hz .. 30 GHz, 32001 points).
KEYSIGHT_XSERIES_MODEL = AnalyserModel("X-series", 26.5e9, 100_001, (1.0, 8e6))
RS_FSV_MODEL = AnalyserModel("FSV", 30e9, 32_001, (1.0, 10e6))


@dataclass(frozen=True)
class MagnetSupplyModel:
    """A bipolar magnet supply in current mode: its current and voltage rating (a Kepco BOP 36-12)."""

    max_current_A: float = 12.0
    max_voltage_V: float = 36.0


KEPCO_BOP_36_12 = MagnetSupplyModel()


@dataclass(frozen=True)
class GaussmeterModel:
    """A gaussmeter with its standard probe: the largest field it reads (top range, T)."""

    max_field_T: float = 3.5


LAKESHORE_425 = GaussmeterModel()
#: the 475 with a high-sensitivity probe (HSE, 35 kG top range); a high-stability one reads 35 T
LAKESHORE_475 = GaussmeterModel()
