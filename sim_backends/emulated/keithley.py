"""Emulated Keithley 2400 SourceMeter: what ``pymeasure.instruments.keithley.Keithley2400`` sends.

The DC bias path only needs current sourcing, but pymeasure's driver touches much more of the
command tree (format elements, buffer/trigger setup, sense ranges, averaging...), so every header
it uses is accepted with a range-checked stored value, and the parts with physics are modelled:
the source (current or voltage, with the 2400's +-1.05 A / +-210 V limits), compliance (the
output limits at the compliance value of the other quantity, as the real unit does), the output
relay and measurements into a resistive load (``load_ohm``, the device's DC resistance).
``output_current_A()`` is what the lab feeds to the device model as ``bias_A``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

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


class EmulatedKeithley2400(ScpiInstrument):
    IDN = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,EMULATED,C32   Oct  4 2010 14:20:11/A02  /S/K"

    def __init__(self, load_ohm: float = 100.0, lock=None) -> None:
        if not load_ohm > 0:
            raise ValueError(f"load_ohm must be positive, got {load_ohm!r}")
        self.load_ohm = float(load_ohm)
        self._t0 = time.monotonic()
        super().__init__(lock)

    # --- state -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.source_function = "VOLT"
        self.source_current_A = 0.0
        self.source_voltage_V = 0.0
        self.compliance_voltage_V = 21.0
        self.compliance_current_A = 105e-6
        self.output_on = False
        self.settings: dict[str, str] = {}
        self.buffer: list[float] = []
        #: Every source-current level programmed since the last reset (what a bus sniffer sees).
        self.current_log: list[float] = []

    def output_current_A(self) -> float:
        """Current through the load now (0 with the output off), compliance applied."""
        if not self.output_on:
            return 0.0
        if self.source_function == "CURR":
            current = self.source_current_A
            if abs(current * self.load_ohm) > self.compliance_voltage_V:
                current = math.copysign(self.compliance_voltage_V / self.load_ohm, current)
            return current
        current = self.source_voltage_V / self.load_ohm
        if abs(current) > self.compliance_current_A:
            current = math.copysign(self.compliance_current_A, current)
        return current

    def output_voltage_V(self) -> float:
        return self.output_current_A() * self.load_ohm

    def _reading(self) -> str:
        v, i = self.output_voltage_V(), self.output_current_A()
        r = v / i if i else 9.91e37
        t = time.monotonic() - self._t0
        return ",".join(format_float(x) for x in (v, i, r, t, 0.0))

    # --- command tree ----------------------------------------------------------------------
    def _register(self) -> None:
        self.command("OUTPut[:STATe]", lambda a: setattr(self, "output_on", arg_bool(self._one(a))))
        self.query("OUTPut[:STATe]", lambda a: str(int(self.output_on)))
        self.command(
            "[SOURce[1]]:FUNCtion[:MODE]",
            lambda a: setattr(self, "source_function", arg_choice(self._one(a), ("CURRent", "VOLTage"))),
        )
        self.query("[SOURce[1]]:FUNCtion[:MODE]", lambda a: self.source_function)
        self.command("[SOURce[1]]:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._set_current)
        self.query(
            "[SOURce[1]]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: format_float(self.source_current_A),
        )
        self.command("[SOURce[1]]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._set_voltage)
        self.query(
            "[SOURce[1]]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: format_float(self.source_voltage_V),
        )
        self.command("[SENSe[1]]:VOLTage[:DC]:PROTection[:LEVel]", self._set_compliance_voltage)
        self.query(
            "[SENSe[1]]:VOLTage[:DC]:PROTection[:LEVel]", lambda a: format_float(self.compliance_voltage_V)
        )
        self.command("[SENSe[1]]:CURRent[:DC]:PROTection[:LEVel]", self._set_compliance_current)
        self.query(
            "[SENSe[1]]:CURRent[:DC]:PROTection[:LEVel]", lambda a: format_float(self.compliance_current_A)
        )
        self.query("MEASure:CURRent[:DC]", lambda a: format_float(self.output_current_A()))
        self.query("MEASure:VOLTage[:DC]", lambda a: format_float(self.output_voltage_V()))
        self.query("MEASure:RESistance", lambda a: format_float(self.load_ohm if self.output_on else 9.91e37))
        self.query("READ", lambda a: self._reading())
        self.command("INITiate[:IMMediate]", lambda a: self.buffer.append(self.output_voltage_V()))
        self.query(
            "TRACe:DATA", lambda a: ",".join(format_float(v) for v in self.buffer) or format_float(0.0)
        )
        self.command("TRACe:CLEar", lambda a: self.buffer.clear())
        self.command("ABORt", lambda a: None)
        self.command("STATus:PRESet", lambda a: None)
        self.command("SYSTem:BEEPer[:IMMediate]", lambda a: None)
        self.command("TRIGger:CLEar", lambda a: None)
        self.command("SENSe:FUNCtion:ALL", lambda a: None)
        self.command("SENSe:FUNCtion:OFF:ALL", lambda a: None)
        self.command(
            "FORMat[:ELEMents][:SENSe[1]]", lambda a: self._store("FORM:ELEM", ",".join(x.text for x in a))
        )
        self.query(
            "FORMat[:ELEMents][:SENSe[1]]",
            lambda a: self.settings.get("FORM:ELEM", "VOLT,CURR,RES,TIME,STAT"),
        )
        self.command(
            "SENSe[1]:FUNCtion[:ON]", lambda a: self._store("SENS:FUNC", ",".join(arg_string(x) for x in a))
        )
        self.query("SENSe[1]:FUNCtion[:ON]", lambda a: self.settings.get("SENS:FUNC", '"CURR:DC"'))
        # stored settings pymeasure's driver reads back: name -> (kind, default)
        stored = {
            "[SOURce[1]]:DELay": ("float", "0.0"),
            "[SOURce[1]]:DELay:AUTO": ("bool", "1"),
            "[SOURce[1]]:CLEar:AUTO": ("bool", "0"),
            "[SOURce[1]]:CURRent:RANGe": ("float", "1.05E-04"),
            "[SOURce[1]]:CURRent:RANGe:AUTO": ("bool", "1"),
            "[SOURce[1]]:VOLTage:RANGe": ("float", "2.1E+01"),
            "[SOURce[1]]:VOLTage:RANGe:AUTO": ("bool", "1"),
            "[SOURce[1]]:CURRent:MODE": ("text", "FIX"),
            "[SOURce[1]]:VOLTage:MODE": ("text", "FIX"),
            "[SENSe[1]]:CURRent[:DC]:RANGe[:UPPer]": ("float", "1.05E-04"),
            "[SENSe[1]]:CURRent[:DC]:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:CURRent[:DC]:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer]": ("float", "2.1E+01"),
            "[SENSe[1]]:VOLTage[:DC]:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:VOLTage[:DC]:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:RESistance:RANGe[:UPPer]": ("float", "2.1E+05"),
            "[SENSe[1]]:RESistance:RANGe:AUTO": ("bool", "1"),
            "[SENSe[1]]:RESistance:NPLCycles": ("float", "1.0"),
            "[SENSe[1]]:RESistance:MODE": ("text", "MAN"),
            "[SENSe[1]]:AVERage[:STATe]": ("bool", "0"),
            "[SENSe[1]]:AVERage:TCONtrol": ("text", "REP"),
            "[SENSe[1]]:AVERage:COUNt": ("float", "10"),
            "SYSTem:AZERo[:STATe]": ("text", "1"),
            "SYSTem:LFRequency": ("float", "60"),
            "SYSTem:LFRequency:AUTO": ("bool", "1"),
            "SYSTem:RSENse": ("bool", "0"),
            "DISPlay:ENABle": ("bool", "1"),
            "OUTPut:SMODe": ("text", "NORM"),
            "ROUTe:TERMinals": ("text", "FRON"),
            "FORMat:DATA": ("text", "ASC"),
            "TRACe:POINts": ("float", "100"),
            "TRACe:FEED": ("text", "SENS"),
            "TRACe:FEED:CONTrol": ("text", "NEV"),
            "TRIGger:COUNt": ("float", "1"),
            "TRIGger:DELay": ("float", "0.0"),
            "TRIGger:SOURce": ("text", "IMM"),
            "TRIGger:ILINe": ("float", "1"),
            "TRIGger:OLINe": ("float", "2"),
            "TRIGger:OUTPut": ("text", "NONE"),
            "ARM:COUNt": ("float", "1"),
            "ARM:SOURce": ("text", "IMM"),
            "ARM:TIMer": ("float", "0.1"),
            "ARM:ILINe": ("float", "1"),
            "ARM:OLINe": ("float", "2"),
            "ARM:OUTPut": ("text", "NONE"),
            "STATus:MEASurement:ENABle": ("float", "0"),
            "CALCulate3:FORMat": ("text", "MEAN"),
        }
        for pattern, (kind, default) in stored.items():
            register_stored(self, pattern, kind, default)
        self.command("*SRE", lambda a: self._store("*SRE", self._one(a).text))
        self.query("*SRE", lambda a: self.settings.get("*SRE", "0"))
        self.query(
            "CALCulate3:DATA",
            lambda a: format_float(sum(self.buffer) / len(self.buffer) if self.buffer else 0.0),
        )
        self.command("STATus:QUEue:CLEar", lambda a: self._clear_status())
        # emulator-only diagnostics (no real 2400 has them): what a bus sniffer would have seen,
        # so tests in other processes can check that the bias was ramped, never stepped
        self.query(
            "DIAGnostic:CURRent:LOG", lambda a: ",".join(format_float(v) for v in self.current_log) or ""
        )
        self.command("DIAGnostic:CURRent:LOG:CLEar", lambda a: self.current_log.clear())

    def _store(self, key: str, value: str) -> None:
        self.settings[key] = value

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

    def _set_compliance_voltage(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args), {"MINimum": 0.2e-3, "MAXimum": MAX_VOLTAGE_V, "DEFault": 21.0})
        if not 0 < abs(value) <= MAX_VOLTAGE_V:
            raise ScpiError(-222, f"compliance voltage {value:g} V outside 0 .. 210 V")
        self.compliance_voltage_V = abs(value)

    def _set_compliance_current(self, args: Sequence[Arg]) -> None:
        value = arg_float(self._one(args), {"MINimum": 1e-9, "MAXimum": MAX_CURRENT_A, "DEFault": 105e-6})
        if not 0 < abs(value) <= MAX_CURRENT_A:
            raise ScpiError(-222, f"compliance current {value:g} A outside 0 .. 1.05 A")
        self.compliance_current_A = abs(value)


def register_stored(
    instrument: ScpiInstrument, pattern: str, kind: str | tuple[str, ...], default: str
) -> None:
    """A setting the emulator only stores and reads back (``instrument.settings[pattern]``):
    ``kind`` is ``"float"``, ``"bool"``, ``"text"`` or the tuple of its choices. Shared by the
    emulated Keithley sources, whose many such settings change nothing in the model."""

    def setter(args: Sequence[Arg]) -> None:
        arg = instrument._one(args)
        if kind == "float":
            value = format_float(arg_float(arg, {"MINimum": 0.0, "MAXimum": 1e9, "DEFault": float(default)}))
        elif kind == "bool":
            value = str(int(arg_bool(arg)))
        elif isinstance(kind, tuple):
            value = arg_choice(arg, kind)
        else:
            value = arg.text.upper()
        instrument.settings[pattern] = value

    instrument.command(pattern, setter)
    instrument.query(pattern, lambda a: instrument.settings.get(pattern, default))
