"""Emulated Keithley 2450 SourceMeter in its SCPI command set (``*LANG SCPI``).

What ``pymeasure.instruments.keithley.Keithley2450`` and spinlab's driver send: the source
function, levels and limits (``:SOUR:CURR:VLIM``, ``:SOUR:VOLT:ILIM``) with the 2450's ranges
(+-1.05 A, +-210 V; limits 0.02 .. 210 V and 1 nA .. 1.05 A), the output relay, measurements
into a resistive load (``load_ohm``, the device's DC resistance) with the limit acting as on the
instrument (``:SOUR:CURR:VLIM:TRIP?`` says when it does), ranges, NPLC, delays and the output-off
state kept as range-checked settings. ``output_current_A()`` is what the lab feeds to the device
model as ``bias_A``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spinlab.sim_backends.emulated.keithley import register_stored
from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import (
    Arg,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    arg_string,
    format_float,
)

MAX_CURRENT_A = 1.05
MAX_VOLTAGE_V = 210.0


class EmulatedKeithley2450(ScpiInstrument):
    IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b"

    def __init__(self, load_ohm: float = 100.0, lock=None) -> None:
        if not load_ohm > 0:
            raise ValueError(f"load_ohm must be positive, got {load_ohm!r}")
        self.load_ohm = float(load_ohm)
        super().__init__(lock)

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.source_function = "VOLT"
        self.source_current_A = 0.0
        self.source_voltage_V = 0.0
        self.voltage_limit_V = 21.0
        self.current_limit_A = 105e-6
        self.output_on = False
        self.sense_function = "CURR"
        self.settings: dict[str, str] = {}
        #: Every source-current level programmed since the last reset (what a bus sniffer sees).
        self.current_log: list[float] = []

    def output_current_A(self) -> float:
        """Current through the load now (0 with the output off), the limit applied."""
        if not self.output_on:
            return 0.0
        if self.source_function == "CURR":
            current = self.source_current_A
            if abs(current * self.load_ohm) > self.voltage_limit_V:
                current = math.copysign(self.voltage_limit_V / self.load_ohm, current)
            return current
        return max(-self.current_limit_A, min(self.current_limit_A, self.source_voltage_V / self.load_ohm))

    def output_voltage_V(self) -> float:
        return self.output_current_A() * self.load_ohm

    def _in_limit(self) -> bool:
        if not self.output_on:
            return False
        if self.source_function == "CURR":
            return abs(self.source_current_A * self.load_ohm) > self.voltage_limit_V
        return abs(self.source_voltage_V / self.load_ohm) > self.current_limit_A

    def _reading(self) -> str:
        """``:READ?``: the sense function's value, as the 2450 returns it in SCPI mode."""
        if self.sense_function == "VOLT":
            return format_float(self.output_voltage_V())
        if self.sense_function == "RES":
            i = self.output_current_A()
            return format_float(self.output_voltage_V() / i if i else 9.9e37)
        return format_float(self.output_current_A())

    # --- command tree ----------------------------------------------------------------------
    def _register(self) -> None:
        self.query("*LANG", lambda a: self._no_args(a) or "SCPI")
        self.command("OUTPut[1][:STATe]", lambda a: setattr(self, "output_on", arg_bool(self._one(a))))
        self.query("OUTPut[1][:STATe]", lambda a: self._no_args(a) or str(int(self.output_on)))
        self.command(
            "[SOURce[1]]:FUNCtion[:MODE]",
            lambda a: setattr(self, "source_function", arg_choice(self._one(a), ("CURRent", "VOLTage"))),
        )
        self.query("[SOURce[1]]:FUNCtion[:MODE]", lambda a: self._no_args(a) or self.source_function)
        level = "[:LEVel][:IMMediate][:AMPLitude]"
        self.command("[SOURce[1]]:CURRent" + level, self._set_current)
        self.query("[SOURce[1]]:CURRent" + level, lambda a: format_float(self.source_current_A))
        self.command("[SOURce[1]]:VOLTage" + level, self._set_voltage)
        self.query("[SOURce[1]]:VOLTage" + level, lambda a: format_float(self.source_voltage_V))
        self.command("[SOURce[1]]:CURRent:VLIMit[:LEVel]", self._set_voltage_limit)
        self.query("[SOURce[1]]:CURRent:VLIMit[:LEVel]", lambda a: format_float(self.voltage_limit_V))
        self.query(
            "[SOURce[1]]:CURRent:VLIMit[:LEVel]:TRIPped",
            lambda a: str(int(self.source_function == "CURR" and self._in_limit())),
        )
        self.command("[SOURce[1]]:VOLTage:ILIMit[:LEVel]", self._set_current_limit)
        self.query("[SOURce[1]]:VOLTage:ILIMit[:LEVel]", lambda a: format_float(self.current_limit_A))
        self.query(
            "[SOURce[1]]:VOLTage:ILIMit[:LEVel]:TRIPped",
            lambda a: str(int(self.source_function == "VOLT" and self._in_limit())),
        )
        self.command("[SENSe[1]]:FUNCtion[:ON]", self._set_sense)
        self.query("[SENSe[1]]:FUNCtion[:ON]", lambda a: f'"{self.sense_function}:DC"')
        self.query("READ", lambda a: self._reading())
        self.query("MEASure:CURRent[:DC]", lambda a: format_float(self.output_current_A()))
        self.query("MEASure:VOLTage[:DC]", lambda a: format_float(self.output_voltage_V()))
        self.query("MEASure:RESistance", lambda a: format_float(self.load_ohm if self.output_on else 9.9e37))
        self.command("SYSTem:BEEPer[:IMMediate]", lambda a: None)
        self.command("SYSTem:CLEar", lambda a: self._no_args(a) or self._clear_status())
        self.command("STATus:PRESet", lambda a: None)
        self.command("ABORt", lambda a: None)
        # stored settings pymeasure's driver reads back: name -> (kind, default)
        stored = {
            "[SOURce[1]]:CURRent:RANGe": ("float", "1.0E-06"),
            "[SOURce[1]]:CURRent:RANGe:AUTO": ("bool", "1"),
            "[SOURce[1]]:VOLTage:RANGe": ("float", "2.0E-02"),
            "[SOURce[1]]:VOLTage:RANGe:AUTO": ("bool", "1"),
            "[SOURce[1]]:CURRent:DELay": ("float", "0.0"),
            "[SOURce[1]]:CURRent:DELay:AUTO": ("bool", "1"),
            "[SOURce[1]]:VOLTage:DELay": ("float", "0.0"),
            "[SOURce[1]]:VOLTage:DELay:AUTO": ("bool", "1"),
            "[SENSe[1]]:CURRent[:DC]:RANGe[:UPPer]": ("float", "1.0E-04"),
            "[SENSe[1]]:CURRent[:DC]:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:CURRent[:DC]:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer]": ("float", "2.0E-02"),
            "[SENSe[1]]:VOLTage[:DC]:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:VOLTage[:DC]:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:RESistance:RANGe[:UPPer]": ("float", "2.0E+05"),
            "[SENSe[1]]:RESistance:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:RESistance:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:RESistance:RSENse": ("bool", "0"),
            "[SENSe[1]]:CURRent[:DC]:AVERage[:STATe]": ("bool", "0"),
            "[SENSe[1]]:CURRent[:DC]:AVERage:COUNt": ("float", "10"),
            "[SENSe[1]]:CURRent[:DC]:AVERage:TCONtrol": ("text", "REP"),
            "[SENSe[1]]:VOLTage[:DC]:AVERage[:STATe]": ("bool", "0"),
            "[SENSe[1]]:VOLTage[:DC]:AVERage:COUNt": ("float", "10"),
            "[SENSe[1]]:VOLTage[:DC]:AVERage:TCONtrol": ("text", "REP"),
            "OUTPut[1]:CURRent:SMODe": ("text", "NORM"),
            "OUTPut[1]:VOLTage:SMODe": ("text", "NORM"),
            "ROUTe:TERMinals": ("text", "FRON"),
        }
        for pattern, (kind, default) in stored.items():
            register_stored(self, pattern, kind, default)
        # emulator-only diagnostic (no real 2450 has it): every current level programmed
        self.query(
            "DIAGnostic:CURRent:LOG", lambda a: ",".join(format_float(v) for v in self.current_log) or ""
        )
        self.command("DIAGnostic:CURRent:LOG:CLEar", lambda a: self.current_log.clear())

    def _set_sense(self, args: Sequence[Arg]) -> None:
        text = arg_string(self._one(args)).upper().removesuffix(":DC")
        if text not in ("CURR", "CURRENT", "VOLT", "VOLTAGE", "RES", "RESISTANCE"):
            raise ScpiError(-224, f"sense function {text!r} is not CURR, VOLT or RES")
        self.sense_function = text[:4] if text[:3] != "RES" else "RES"

    def _set_current(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": -MAX_CURRENT_A, "MAXimum": MAX_CURRENT_A, "DEFault": 0.0}
        )
        if abs(value) > MAX_CURRENT_A:
            raise ScpiError(-222, f"source current {value:g} A outside +-1.05 A")
        self.source_current_A = value
        self.current_log.append(value)

    def _set_voltage(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": -MAX_VOLTAGE_V, "MAXimum": MAX_VOLTAGE_V, "DEFault": 0.0}
        )
        if abs(value) > MAX_VOLTAGE_V:
            raise ScpiError(-222, f"source voltage {value:g} V outside +-210 V")
        self.source_voltage_V = value

    def _set_voltage_limit(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args), {"MINimum": 0.02, "MAXimum": MAX_VOLTAGE_V, "DEFault": 21.0})
        if not 0.02 <= abs(value) <= MAX_VOLTAGE_V:
            raise ScpiError(-222, f"voltage limit {value:g} V outside 0.02 .. 210 V")
        self.voltage_limit_V = abs(value)

    def _set_current_limit(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args), {"MINimum": 1e-9, "MAXimum": MAX_CURRENT_A, "DEFault": 105e-6})
        if not 1e-9 <= abs(value) <= MAX_CURRENT_A:
            raise ScpiError(-222, f"current limit {value:g} A outside 1 nA .. 1.05 A")
        self.current_limit_A = abs(value)


__all__ = ["EmulatedKeithley2450"]
