"""Specific exceptions, so callers (and users) can tell what went wrong and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)


class SpinlabError(Exception):
    """Base class of every error spinlab raises on purpose."""

    #: the run directory, when the error ended a run (see :func:`with_run_path`)
    run_path: Path | None = None


def with_run_path(error: _E, path: Path) -> _E:
    """``error``, marked as having ended the run in ``path`` (whatever its type, so callers keep
    catching what the plan raised); :func:`run_path` reads it back (``spinlab resume PATH``)."""
    error.run_path = path  # type: ignore[attr-defined]  # declared on SpinlabError only
    return error


def run_path(error: BaseException) -> Path | None:
    """The run directory an error ended, or None when it did not come out of a run."""
    path = getattr(error, "run_path", None)
    return path if isinstance(path, Path) else None


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


class InstrumentFaultError(InstrumentError):
    """An instrument kept failing after the bench's retries, or stopped answering; the bench
    switched its outputs off. The message names the instrument, the step and what to check."""


class CheckpointError(SpinlabError, ValueError):
    """A twin checkpoint is corrupt, truncated or from an incompatible version."""


class DatasetError(SpinlabError, ValueError):
    """A dataset directory, file name, audio format or download does not look as expected."""


class MessageFormatError(SpinlabError, ValueError):
    """A monitoring or control message is malformed, oversized, of an unknown version or type."""


#: The old name of :class:`MessageFormatError` (a "protocol" is also what a plan used to be called).
ProtocolError = MessageFormatError


class ControlError(SpinlabError, RuntimeError):
    """A control request failed: no reply (server down or key refused) or an error reply."""


class JournalError(ConfigError):
    """A run journal is not a spinlab journal (or its start is damaged)."""


class StationBusyError(SpinlabError, RuntimeError):
    """Another process holds the station's instruments; the message names it."""


class TwinDivergedError(SpinlabError, RuntimeError):
    """A twin's integration blew up (NaN/inf): the drive or condition is far outside its training."""


class AudioDeviceError(SpinlabError, RuntimeError):
    """No sound input can be opened: PortAudio missing, no input device, or the device refused."""


class AudioInputError(SpinlabError, ValueError):
    """The audio itself is unusable: silent, clipped, or at a sample rate that cannot be used."""


class ReadoutError(SpinlabError, ValueError):
    """A saved digit readout is missing, corrupt, or does not fit the device it is used with."""


class RunAborted(SpinlabError):
    """The run was aborted (remote ``abort``); outputs are off and data is flushed."""


class RunInterrupted(SpinlabError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run; outputs are off, the run file is
    marked ``interrupted`` and ``spinlab resume`` continues it."""

    def __init__(self, signum: int, message: str = "") -> None:
        import signal

        self.signum = int(signum)
        self.signal_name = (
            signal.Signals(self.signum).name
            if self.signum in signal.Signals._value2member_map_
            else str(signum)
        )
        super().__init__(message or f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        """Shell convention: 128 + signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


class ClusterError(SpinlabError, RuntimeError):
    """A sweep's Dask cluster cannot be reached, or has no worker that may run its points."""


class RunBusyError(SpinlabError, RuntimeError):
    """Another process runs or resumes this run directory; the message names it."""


class RunFileError(SpinlabError, RuntimeError):
    """A run's files could not be written (a full disk, an I/O error); the completed steps are
    in its journal and ``spinlab resume`` continues it once the cause is fixed."""


class RunStopping(SpinlabError):
    """A worker thread was asked to stop (its run is ending, or its plan needs no more data):
    it ends at its next record, so the engine can switch the outputs off after it."""
