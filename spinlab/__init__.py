"""spinlab: hardware-in-the-loop control of spintronic neuromorphic experiments.

The public core is small: a :class:`Waveform` (samples + sample interval + unit), the
:class:`Device` interface every backend implements, and :func:`open_device`, which turns an
address string (``sim:vortex``, ``bench:emulated``, ``bench:lab.toml``, ``twin:PATH``) into one.
"""

from importlib import metadata as _metadata

from spinlab.device import Device, DriveQuantity, SafetyLimits
from spinlab.errors import (
    ConfigError,
    DeviceAddressError,
    InstrumentError,
    RunAborted,
    SafetyLimitError,
    SpinlabError,
    WaveformError,
)
from spinlab.registry import open_device, register_scheme
from spinlab.waveform import Waveform


def __getattr__(name: str) -> object:
    """``spinlab.open_run`` and ``spinlab.runs``, imported when first used (xarray, SQLAlchemy)."""
    if name in ("open_run", "runs"):
        from importlib import import_module

        runs = import_module("spinlab.runs")  # `from spinlab import runs` would come back here
        return runs if name == "runs" else runs.open_run
    raise AttributeError(f"module 'spinlab' has no attribute {name!r}")


try:  # one version source: pyproject.toml, read from the installed distribution
    __version__ = _metadata.version("spinlab")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Waveform",
    "Device",
    "SafetyLimits",
    "DriveQuantity",
    "open_device",
    "register_scheme",
    "SpinlabError",
    "WaveformError",
    "SafetyLimitError",
    "ConfigError",
    "DeviceAddressError",
    "InstrumentError",
    "RunAborted",
    "open_run",
    "runs",
    "__version__",
]
