"""Emulated Keithley 6221 AC/DC current source: the DC output, as pymeasure's and spinlab's
drivers use it.

The DC current (+-105 mA) with its compliance (``SOUR:CURR:COMP``, 0.1 .. 105 V: into the
resistive ``load_ohm`` the current is limited to compliance / load, as the source does), the
output relay, ``SOUR:CLE`` (output off, level kept), the source range and delay, the output
low and shield connections kept as range-checked settings. There is no voltage function and no
measurement (a 6221 measures nothing on its own). ``output_current_A()`` is what the lab feeds
to the device model as ``bias_A``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spinlab.sim_backends.emulated.keithley import register_stored
from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import Arg, ScpiError, arg_bool, arg_float, format_float

MAX_CURRENT_A = 0.105
MIN_COMPLIANCE_V, MAX_COMPLIANCE_V = 0.1, 105.0


class EmulatedKeithley6221(ScpiInstrument):
    IDN = "KEITHLEY INSTRUMENTS INC.,MODEL 6221,4143210,D03  /700x"

    def __init__(self, load_ohm: float = 100.0, lock=None) -> None:
        if not load_ohm > 0:
            raise ValueError(f"load_ohm must be positive, got {load_ohm!r}")
        self.load_ohm = float(load_ohm)
        super().__init__(lock)

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.source_current_A = 0.0
        self.compliance_V = 10.0
        self.output_on = False
        self.settings: dict[str, str] = {}
        #: Every current level programmed since the last reset (what a bus sniffer sees).
        self.current_log: list[float] = []

    def output_current_A(self) -> float:
        """Current through the load now (0 with the output off), compliance applied."""
        if not self.output_on:
            return 0.0
        current = self.source_current_A
        if abs(current * self.load_ohm) > self.compliance_V:
            current = math.copysign(self.compliance_V / self.load_ohm, current)
        return current

    # --- command tree ----------------------------------------------------------------------
    def _register(self) -> None:
        self.command("OUTPut[:STATe]", lambda a: setattr(self, "output_on", arg_bool(self._one(a))))
        self.query("OUTPut[:STATe]", lambda a: self._no_args(a) or str(int(self.output_on)))
        level = "[:LEVel][:IMMediate][:AMPLitude]"
        self.command("[SOURce[1]]:CURRent" + level, self._set_current)
        self.query("[SOURce[1]]:CURRent" + level, lambda a: format_float(self.source_current_A))
        self.command("[SOURce[1]]:CURRent:COMPliance", self._set_compliance)
        self.query("[SOURce[1]]:CURRent:COMPliance", lambda a: format_float(self.compliance_V))
        self.command(
            "[SOURce[1]]:CLEar[:IMMediate]", lambda a: self._no_args(a) or setattr(self, "output_on", False)
        )
        self.command("[SOURce[1]]:SWEep:ABORt", lambda a: None)
        self.command("[SOURce[1]]:WAVE:ABORt", lambda a: None)
        self.command("SYSTem:BEEPer[:IMMediate]", lambda a: None)
        self.command("STATus:PRESet", lambda a: None)
        self.command("STATus:QUEue:CLEar", lambda a: self._clear_status())
        stored = {
            "[SOURce[1]]:CURRent:RANGe": ("float", "1.0E-01"),
            "[SOURce[1]]:CURRent:RANGe:AUTO": ("bool", "0"),
            "[SOURce[1]]:CURRent:FILTer[:STATe]": ("bool", "0"),
            "[SOURce[1]]:DELay": ("float", "1.0E-03"),
            "OUTPut:LTEarth": ("bool", "0"),
            "OUTPut:ISHield": (("GUARd", "OLOW"), "OLOW"),
            "OUTPut:RESPonse": (("FAST", "SLOW"), "SLOW"),
            "DISPlay:ENABle": ("bool", "1"),
        }
        for pattern, (kind, default) in stored.items():
            register_stored(self, pattern, kind, default)
        # emulator-only diagnostic (no real 6221 has it): every current level programmed
        self.query(
            "DIAGnostic:CURRent:LOG", lambda a: ",".join(format_float(v) for v in self.current_log) or ""
        )
        self.command("DIAGnostic:CURRent:LOG:CLEar", lambda a: self.current_log.clear())

    def _set_current(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": -MAX_CURRENT_A, "MAXimum": MAX_CURRENT_A, "DEFault": 0.0}
        )
        if abs(value) > MAX_CURRENT_A:
            raise ScpiError(-222, f"source current {value:g} A outside +-105 mA")
        self.source_current_A = value
        self.current_log.append(value)

    def _set_compliance(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": MIN_COMPLIANCE_V, "MAXimum": MAX_COMPLIANCE_V, "DEFault": 10.0}
        )
        if not MIN_COMPLIANCE_V <= value <= MAX_COMPLIANCE_V:
            raise ScpiError(-222, f"compliance {value:g} V outside 0.1 .. 105 V")
        self.compliance_V = value


__all__ = ["EmulatedKeithley6221"]
