"""Keysight X-series signal analyser (N9000B CXA, N9010B EXA, N9020B MXA) in Spectrum Analyzer mode.

Per the X-series "Spectrum Analyzer Mode User's & Programmer's Reference": one single sweep
(``:INITiate:CONTinuous OFF``, then ``:INITiate:IMMediate;*OPC?``), the trace read as one IEEE
488.2 block of 32-bit floats, least significant byte first (``:FORMat:TRACe:DATA REAL,32`` with
``:FORMat:BORDer SWAPped``) in the Y unit (dBm). The block length is checked against
``:SENSe:SWEep:POINts?``, ``*OPC?`` after it proves the reply stream is in step, and the
Questionable Integrity condition register is read after every sweep: input overload (bit 4) or
an uncalibrated measurement (bit 3) raises :class:`~spinlab.errors.InstrumentError` instead of
returning a trace whose powers are wrong. Trace point i is at ``start + i * span / (points - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymeasure.instruments import Instrument, SCPIMixin

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.capabilities import KEYSIGHT_XSERIES_MODEL
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ErrorQueueMixin,
    choice_control,
    ensure_termination,
    flag_control,
    int_reply,
    range_control,
    read_block,
)

#: Highest frequency of the family (N9020B option 550); lower options reject more with -222.
MAX_FREQUENCY_Hz = 50e9
#: Resolution bandwidths: 1 Hz .. 3 MHz in 10 % steps, plus 4, 5, 6 and 8 MHz.
RBW_RANGE_Hz = (1.0, 8e6)
VBW_RANGE_Hz = (1.0, 50e6)
#: Sweep points (firmware A.13 and later; older firmware stops at 40001).
POINTS_RANGE = (1, 100_001)
REFERENCE_LEVEL_RANGE_dBm = (-170.0, 30.0)
#: :STATus:QUEStionable:INTegrity:CONDition? bits that make a trace's powers untrustworthy.
UNCALIBRATED_BIT = 1 << 3
OVERLOAD_BIT = 1 << 4
TRANSFER_SETUP = ":FORMat:TRACe:DATA REAL,32;:FORMat:BORDer SWAPped"


@dataclass(frozen=True)
class SpectrumTrace:
    """One sweep: power (dBm, in the resolution bandwidth) at each frequency (Hz)."""

    frequency_Hz: np.ndarray
    power_dBm: np.ndarray
    rbw_Hz: float
    meta: dict[str, Any] = field(default_factory=dict)


class SweptAnalyser(ErrorQueueMixin, SCPIMixin, Instrument):
    """What every swept analyser driver shares: the settings as held, one sweep with ``*OPC?``,
    and trace 1 read as a checked ``REAL,32`` block. A family names its two commands and its
    status check (overload, uncalibrated)."""

    #: starts one sweep; ``*OPC?`` answers when it is complete
    SWEEP_COMMAND = ""
    #: asks for trace 1 as a binary block
    TRACE_QUERY = ""

    def settings(self) -> dict[str, float]:
        """Centre, span, RBW and points as the analyser holds them."""
        return {
            "center_Hz": self.center_frequency_Hz,
            "span_Hz": self.span_Hz,
            "rbw_Hz": self.rbw_Hz,
            "points": self.sweep_points,
        }

    def sweep(self) -> None:
        """One sweep, returning when it is complete (``*OPC?`` answers after the sweep)."""
        reply = self.ask(f"{self.SWEEP_COMMAND};*OPC?")
        if reply.strip() != "1":
            raise InstrumentError(f"{self.name} answered {reply[:40]!r} to {self.SWEEP_COMMAND};*OPC?")

    def check_status(self) -> None:
        """Raise if the last sweep's powers are not to be trusted (each family's status bits)."""
        raise NotImplementedError

    def read_trace(self) -> SpectrumTrace:
        """Trace 1 of the last sweep, checked (block length against the sweep points, reply
        stream in step, finite powers, :meth:`check_status`)."""
        settings = self.settings()
        points = int(settings["points"])
        if points < 2:
            raise InstrumentError(f"{self.name} holds {points} sweep point(s); configure() sets >= 2")
        self.write(self.TRACE_QUERY)
        payload = read_block(self, expected_bytes=4 * points)
        power = np.frombuffer(payload, dtype="<f4").astype(np.float64)
        self.check_in_step("the trace transfer")
        if not np.all(np.isfinite(power)):
            raise InstrumentError(f"{self.name} sent a trace with non-finite powers")
        self.check_status()
        start = settings["center_Hz"] - settings["span_Hz"] / 2
        freqs = start + settings["span_Hz"] * np.arange(points) / (points - 1)
        return SpectrumTrace(freqs, power, settings["rbw_Hz"], {"settings": settings})

    def measure(self) -> SpectrumTrace:
        """One sweep and its trace."""
        self.sweep()
        return self.read_trace()


class KeysightXSeries(SweptAnalyser):
    """Keysight X-series signal analyser (N9000B/N9010B/N9020B), swept spectrum, trace 1."""

    ERROR_QUERY = ":SYSTem:ERRor?"
    SWEEP_COMMAND = ":INITiate:IMMediate"
    TRACE_QUERY = ":TRACe:DATA? TRACE1"

    def __init__(self, adapter: Any, name: str = "Keysight X-series signal analyser", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)

    center_frequency_Hz = range_control(
        ":SENSe:FREQuency:CENTer?",
        ":SENSe:FREQuency:CENTer %.12g",
        """Control the centre frequency in Hz (float).""",
        [0.0, MAX_FREQUENCY_Hz],
        "centre frequency",
    )
    span_Hz = range_control(
        ":SENSe:FREQuency:SPAN?",
        ":SENSe:FREQuency:SPAN %.12g",
        """Control the frequency span in Hz (float; 0 is zero span).""",
        [0.0, MAX_FREQUENCY_Hz],
        "span",
    )
    rbw_Hz = range_control(
        ":SENSe:BANDwidth:RESolution?",
        ":SENSe:BANDwidth:RESolution %.12g",
        """Control the resolution bandwidth in Hz (float; the analyser rounds to its steps).""",
        RBW_RANGE_Hz,
        "resolution bandwidth",
    )
    vbw_Hz = range_control(
        ":SENSe:BANDwidth:VIDeo?",
        ":SENSe:BANDwidth:VIDeo %.12g",
        """Control the video bandwidth in Hz (float).""",
        VBW_RANGE_Hz,
        "video bandwidth",
    )
    sweep_points = range_control(
        ":SENSe:SWEep:POINts?",
        ":SENSe:SWEep:POINts %d",
        """Control the number of trace points (int).""",
        POINTS_RANGE,
        "sweep points",
        kind=int,
    )
    reference_level_dBm = range_control(
        ":DISPlay:WINDow:TRACe:Y:SCALe:RLEVel?",
        ":DISPlay:WINDow:TRACe:Y:SCALe:RLEVel %.6g",
        """Control the reference level in dBm (float): the top of the screen, which sets the
        input attenuation; a signal far above it overloads the mixer.""",
        REFERENCE_LEVEL_RANGE_dBm,
        "reference level",
    )
    continuous = flag_control(
        ":INITiate:CONTinuous?",
        ":INITiate:CONTinuous %d",
        """Control continuous sweeping (bool); off, each :INITiate makes one sweep.""",
        "continuous sweep",
    )
    averaging = flag_control(
        ":SENSe:AVERage:STATe?",
        ":SENSe:AVERage:STATe %d",
        """Control trace averaging (bool); on, one :INITiate completes after the average count.""",
        "averaging",
    )
    average_count = range_control(
        ":SENSe:AVERage:COUNt?",
        ":SENSe:AVERage:COUNt %d",
        """Control how many sweeps an averaged trace holds (int, 1 .. 10000).""",
        [1, 10_000],
        "average count",
        kind=int,
    )
    power_unit = choice_control(
        ":UNIT:POWer?",
        ":UNIT:POWer %s",
        """Control the Y unit of traces (str; the driver reads traces in DBM).""",
        ["DBM", "DBMV", "DBUV", "V", "W"],
        "power unit",
    )
    integrity_condition = Instrument.measurement(
        ":STATus:QUEStionable:INTegrity:CONDition?",
        """Get the Questionable Integrity condition register (int; bit 3 uncalibrated,
        bit 4 input overload).""",
        get_process=int_reply("integrity condition"),
        **RAW_REPLY,
    )

    # --- setup ---------------------------------------------------------------------------------
    def configure(
        self,
        center_Hz: float,
        span_Hz: float,
        rbw_Hz: float,
        points: int = 1001,
        reference_level_dBm: float = 0.0,
        vbw_Hz: float | None = None,
        averages: int = 1,
    ) -> dict[str, float]:
        """Set up single swept measurements of ``span_Hz`` around ``center_Hz``; ``vbw_Hz``
        defaults to ``rbw_Hz``; ``averages`` > 1 makes each measurement the average of that
        many sweeps. Returns the settings the analyser took (RBW is rounded)."""
        for name, value in (("center_Hz", center_Hz), ("span_Hz", span_Hz), ("rbw_Hz", rbw_Hz)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of Hz, got {value!r}")
        if span_Hz / 2 > center_Hz:
            raise ConfigError(f"span {span_Hz:g} Hz around {center_Hz:g} Hz would start below 0 Hz")
        if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= POINTS_RANGE[1]:
            raise ConfigError(f"points must be an integer 2 .. {POINTS_RANGE[1]}, got {points!r}")
        if isinstance(averages, bool) or not isinstance(averages, int) or not 1 <= averages <= 10_000:
            raise ConfigError(f"averages must be an integer 1 .. 10000, got {averages!r}")
        self.continuous = False
        self.power_unit = "DBM"
        self.center_frequency_Hz = center_Hz
        self.span_Hz = span_Hz
        self.rbw_Hz = rbw_Hz
        self.vbw_Hz = rbw_Hz if vbw_Hz is None else vbw_Hz
        self.sweep_points = points
        self.reference_level_dBm = reference_level_dBm
        if averages > 1:
            self.average_count = averages
        self.averaging = averages > 1
        self.write(TRANSFER_SETUP)
        self.raise_errors("configuring the sweep")
        return self.settings()

    # --- measurement ---------------------------------------------------------------------------
    def check_status(self) -> None:
        """Raise if the last measurement overloaded the input or is uncalibrated."""
        condition = self.integrity_condition
        if condition & OVERLOAD_BIT:
            raise InstrumentError(
                f"{self.name}: input overload (questionable integrity {condition}); raise the "
                "reference level or add attenuation, the trace's powers are wrong"
            )
        if condition & UNCALIBRATED_BIT:
            raise InstrumentError(
                f"{self.name}: measurement uncalibrated (questionable integrity {condition}); "
                "widen the RBW or let the sweep time couple"
            )


KEYSIGHT_XSERIES = DriverSpec(
    "keysight-xseries",
    "analyser",
    KeysightXSeries,
    r"(Keysight|Agilent) Technologies",
    r"N90[0-4]0[AB]",
    KEYSIGHT_XSERIES_MODEL,
    "Keysight X-series signal analyser (CXA/EXA/MXA/PXA), swept SA, REAL,32 traces",
)
