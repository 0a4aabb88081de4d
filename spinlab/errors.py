"""Specific exceptions, so callers (and users) can tell what went wrong and what to do."""


class SpinlabError(Exception):
    """Base class of every error spinlab raises on purpose."""


class WaveformError(SpinlabError, ValueError):
    """A waveform is malformed: NaN/inf samples, bad shape, non-positive sample interval."""


class SafetyLimitError(SpinlabError, ValueError):
    """A drive or operating condition exceeds the station's safety limits; nothing was sent."""


class ConfigError(SpinlabError, ValueError):
    """A station file, protocol config or command-line option is invalid."""


class DeviceAddressError(SpinlabError, ValueError):
    """A device address string (``sim:...``, ``bench:...``, ``twin:...``) cannot be resolved."""


class InstrumentError(SpinlabError, RuntimeError):
    """An instrument reported an error, or replied with something malformed."""


class CheckpointError(SpinlabError, ValueError):
    """A twin checkpoint is corrupt, truncated or from an incompatible version."""


class RunAborted(SpinlabError):
    """The run was aborted (remote ``abort`` or Ctrl-C); outputs are off and data is flushed."""
