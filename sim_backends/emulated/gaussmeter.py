"""Emulated Lake Shore 425 and 475 DSP gaussmeters with a high-sensitivity probe.

It reads a field source (the emulated magnet's ``field_T``) plus Gaussian probe noise and a probe
offset that drifts at ``drift_T_per_s`` (0 by default; ``ZPROBE`` zeroes it, as if the probe were
in its zero-gauss chamber), and answers
the 425's commands as its manual gives them, so spinlab's ``LakeShore425`` and pymeasure's
``LakeShore425`` both work: ``RDGFIELD?`` (``+nnn.nnnE+nn`` in the present units; beyond the
range it answers ``+OL``/``-OL``, what the front panel shows), ``UNIT``, ``RANGE`` (1-4: 35 G, 350 G, 3.5 kG,
35 kG), ``AUTO`` (a bare ``AUTO``, as pymeasure sends it, turns autoranging on), ``RDGMODE``,
``TYPE?``, ``ZPROBE``. A manual range shows the reading to five digits of that range, so a small
field on a high range is coarse, as on the real meter. Built on the common emulated-SCPI core
(sessions, ``*IDN?``, faults); the 425 itself has no SCPI error queue, but what the core queues
for bad commands is still readable with ``SYST:ERR?``.

The 475 (:class:`EmulatedLakeShore475`) reads the same probe with the same noise, drift and
overload model and answers as its manual gives: ``LSCI,MODEL475`` to ``*IDN?``, five ranges
(``RANGE 1..5``: 3.5 G .. 35 kG with this probe) and ``RDGMODE <mode>,<dc resolution>,<rms
filter>,<peak mode>,<peak display>``, the DC resolution (3 3/4, 4 3/4 or 5 3/4 digits) setting
how finely a reading is shown.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import Arg, ScpiError, arg_bool, arg_int

MU0 = 4e-7 * math.pi
#: tesla per reading unit for UNIT 1..4 (G, T, Oe, A/m; Oe and A/m as mu0 H in air)
TESLA_PER_UNIT = {1: 1e-4, 2: 1.0, 3: 1e-4, 4: MU0}
#: full scale of RANGE 1..4 in tesla (high-sensitivity probe, type 40)
RANGES_T = {1: 3.5e-3, 2: 3.5e-2, 3: 0.35, 4: 3.5}


class EmulatedLakeShore425(ScpiInstrument):
    """``field_source``: the true field in T. ``noise_T``: RMS probe noise. ``seed``: its generator.
    ``drift_T_per_s``: how fast the probe's offset drifts. ``clock``: time source in s."""

    IDN = "LSCI,MODEL425,4250000,1.0"
    #: full scale of RANGE 1.. in tesla with the probe ``TYPE?`` answers
    RANGES_T: dict[int, float] = RANGES_T
    #: the ``RDGMODE`` fields: (name, lowest code, highest code), and their power-up values
    MODE_FIELDS: tuple[tuple[str, int, int], ...] = (("mode", 1, 2), ("filter", 0, 1), ("band", 1, 2))
    MODE_RESET: tuple[int, ...] = (1, 1, 1)  # DC, filter on, wide band

    def __init__(
        self,
        field_source: Callable[[], float],
        *,
        noise_T: float = 2e-5,
        seed: int = 0,
        drift_T_per_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        lock: threading.RLock | None = None,
    ) -> None:
        if not (math.isfinite(noise_T) and noise_T >= 0):
            raise ValueError(f"noise_T must be a finite number >= 0, got {noise_T!r}")
        self.field_source = field_source
        if not math.isfinite(drift_T_per_s):
            raise ValueError(f"drift_T_per_s must be finite, got {drift_T_per_s!r}")
        self.noise_T = float(noise_T)
        self.drift_T_per_s = float(drift_T_per_s)
        self.clock = clock
        self._zeroed_at = clock()
        self._rng = np.random.default_rng(seed)
        super().__init__(lock)

    def _reset(self) -> None:
        self.unit = 1
        self.range = len(self.RANGES_T)
        self.auto = True
        self.mode = self.MODE_RESET

    def reading_T(self) -> float:
        """One noisy reading in T (what the probe sees now)."""
        offset = self.drift_T_per_s * (self.clock() - self._zeroed_at)
        return float(self.field_source()) + offset + self.noise_T * float(self._rng.standard_normal())

    def _field_reply(self) -> str:
        field = self.reading_T()
        top = len(self.RANGES_T)
        if self.auto:
            self.range = next((r for r, full in self.RANGES_T.items() if abs(field) <= full), top)
        full = self.RANGES_T[self.range]
        if abs(field) > full:
            return "-OL" if field < 0 else "+OL"
        per_unit = TESLA_PER_UNIT[self.unit]
        # the digits shown of full scale (five: 3.5000 kG -> 0.1 G steps)
        digits = self._digits()
        step = 10.0 ** (math.floor(math.log10(full / per_unit)) - digits + 1)
        return f"{round(field / per_unit / step) * step:+.{digits - 1}E}"

    def _digits(self) -> int:
        """How many digits of full scale a reading shows."""
        return 5

    # --- command tree ------------------------------------------------------------------------
    def _register(self) -> None:
        self.query("RDGFIELD", lambda a: self._no_args(a) or self._field_reply())
        self.command("UNIT", lambda a: setattr(self, "unit", self._code(a, "units", 1, 4)))
        self.query("UNIT", lambda a: self._no_args(a) or str(self.unit))
        self.command("RANGE", self._set_range)
        self.query("RANGE", lambda a: self._no_args(a) or str(self.range))
        self.command("AUTO", lambda a: setattr(self, "auto", arg_bool(self._one(a)) if a else True))
        self.query("AUTO", lambda a: self._no_args(a) or str(int(self.auto)))
        self.command("RDGMODE", self._set_mode)
        self.query("RDGMODE", lambda a: self._no_args(a) or ",".join(str(x) for x in self.mode))
        self.query("TYPE", lambda a: self._no_args(a) or "40")
        self.command("ZPROBE", lambda a: self._no_args(a) or setattr(self, "_zeroed_at", self.clock()))

    def _code(self, args: Sequence[Arg], what: str, low: int, high: int) -> int:
        value = arg_int(self._one(args))
        if not low <= value <= high:
            raise ScpiError(-222, f"{what} {value} outside {low}..{high}")
        return value

    def _set_range(self, args: Sequence[Arg]) -> None:
        self.range = self._code(args, "range", 1, len(self.RANGES_T))
        self.auto = False  # choosing a range ends autoranging, as on the front panel

    def _set_mode(self, args: Sequence[Arg]) -> None:
        fields = self.MODE_FIELDS
        if len(args) != len(fields):
            names = ",".join(f"<{name}>" for name, _, _ in fields)
            raise ScpiError(-109 if len(args) < len(fields) else -108, f"RDGMODE takes {names}")
        self.mode = tuple(
            self._code([arg], name, low, high) for arg, (name, low, high) in zip(args, fields, strict=True)
        )


class EmulatedLakeShore475(EmulatedLakeShore425):
    """The Model 475 DSP with a high-sensitivity probe (type 40): the 425's probe model, the 475's
    five ranges, ``RDGMODE`` fields and GPIB identity."""

    IDN = "LSCI,MODEL475,4750000,04102003"
    RANGES_T = {1: 3.5e-4, 2: 3.5e-3, 3: 3.5e-2, 4: 0.35, 5: 3.5}
    MODE_FIELDS = (
        ("mode", 1, 3),
        ("dc resolution", 1, 3),
        ("rms filter", 1, 3),
        ("peak mode", 1, 2),
        ("peak display", 1, 3),
    )
    MODE_RESET = (1, 2, 1, 1, 1)  # DC at 4 3/4 digits, wide band, periodic, positive

    def _digits(self) -> int:
        return 3 + self.mode[1]  # dc resolution 1, 2, 3: 3 3/4, 4 3/4, 5 3/4 digits (3.500 .. 3.50000)
