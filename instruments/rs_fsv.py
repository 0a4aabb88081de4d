"""Rohde & Schwarz FSV (and FSW) signal and spectrum analyser in Spectrum mode.

Per the R&S FSV operating manual's remote-control chapter: single sweeps (``INIT:CONT OFF``,
then ``INIT;*OPC?``, which answers once the sweep count is done), averaging as the trace mode
(``DISP:WIND:TRAC:MODE AVER`` with ``SENS:SWE:COUN`` sweeps, the RMS detector so the average is
in power), the sweep time coupled (``SENS:SWE:TIME:AUTO ON``: never "UNCAL"), and trace 1 read
as one IEEE 488.2 block of 32-bit floats in Intel byte order (``FORM REAL,32`` with
``FORM:BORD SWAP``, the instrument's default order) in dBm (``CALC:UNIT:POW DBM``). As with the
X-series driver, the block length is checked against ``SENS:SWE:POIN?``, ``*OPC?`` after it
proves the reply stream is in step, and ``STAT:QUES:POW:COND?`` is read after every sweep: an
RF or IF overload (bits 0 and 2) raises instead of returning a trace whose powers are wrong.
Trace point i is at ``start + i * span / (points - 1)``.
"""

from __future__ import annotations

import math
from typing import Any

from pymeasure.instruments import Instrument

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.capabilities import RS_FSV_MODEL
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.keysight_xsa import SweptAnalyser
from spinlab.instruments.scpi import (
    RAW_REPLY,
    choice_control,
    ensure_termination,
    flag_control,
    int_reply,
    range_control,
)

#: FSV40 tops out at 40 GHz (FSW85: 85 GHz; the instrument refuses beyond its own with -222).
MAX_FREQUENCY_Hz = 85e9
#: Sweep points of the FSV (FSW: up to 100001; the instrument refuses beyond its own).
POINTS_RANGE = (101, 100_001)
RBW_RANGE_Hz = (1.0, 10e6)
VBW_RANGE_Hz = (1.0, 28e6)
REFERENCE_LEVEL_RANGE_dBm = (-130.0, 30.0)
#: STATus:QUEStionable:POWer bits: RF input overload, IF overload.
RF_OVERLOAD_BIT = 1 << 0
IF_OVERLOAD_BIT = 1 << 2
TRANSFER_SETUP = "FORM REAL,32;FORM:BORD SWAP"


class RsFsv(SweptAnalyser):
    """R&S FSV / FSW analyser, swept spectrum, trace 1."""

    ERROR_QUERY = "SYST:ERR?"
    SWEEP_COMMAND = "INIT"
    TRACE_QUERY = "TRAC:DATA? TRACE1"

    def __init__(self, adapter: Any, name: str = "R&S FSV signal analyser", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 20_000)
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)

    center_frequency_Hz = range_control(
        "SENS:FREQ:CENT?",
        "SENS:FREQ:CENT %.12g",
        """Control the centre frequency in Hz (float).""",
        [0.0, MAX_FREQUENCY_Hz],
        "centre frequency",
    )
    span_Hz = range_control(
        "SENS:FREQ:SPAN?",
        "SENS:FREQ:SPAN %.12g",
        """Control the frequency span in Hz (float; 0 is zero span).""",
        [0.0, MAX_FREQUENCY_Hz],
        "span",
    )
    rbw_Hz = range_control(
        "SENS:BAND:RES?",
        "SENS:BAND:RES %.12g",
        """Control the resolution bandwidth in Hz (float; the analyser rounds to 1-2-3-5 steps).""",
        RBW_RANGE_Hz,
        "resolution bandwidth",
    )
    vbw_Hz = range_control(
        "SENS:BAND:VID?",
        "SENS:BAND:VID %.12g",
        """Control the video bandwidth in Hz (float).""",
        VBW_RANGE_Hz,
        "video bandwidth",
    )
    sweep_points = range_control(
        "SENS:SWE:POIN?",
        "SENS:SWE:POIN %d",
        """Control the number of trace points (int; FSV 101 .. 32001).""",
        POINTS_RANGE,
        "sweep points",
        kind=int,
    )
    sweep_count = range_control(
        "SENS:SWE:COUN?",
        "SENS:SWE:COUN %d",
        """Control how many sweeps one single sweep makes (int; averaged in trace mode AVER).""",
        [0, 32767],
        "sweep count",
        kind=int,
    )
    sweep_time_auto = flag_control(
        "SENS:SWE:TIME:AUTO?",
        "SENS:SWE:TIME:AUTO %d",
        """Control whether the sweep time follows span and RBW (bool).""",
        "sweep time coupling",
    )
    reference_level_dBm = range_control(
        "DISP:WIND:TRAC:Y:SCAL:RLEV?",
        "DISP:WIND:TRAC:Y:SCAL:RLEV %.6g",
        """Control the reference level in dBm (float): it sets the input attenuation, so a
        signal far above it overloads the mixer.""",
        REFERENCE_LEVEL_RANGE_dBm,
        "reference level",
    )
    continuous = flag_control(
        "INIT:CONT?",
        "INIT:CONT %d",
        """Control continuous sweeping (bool); off, each INIT makes one single sweep.""",
        "continuous sweep",
    )
    trace_mode = choice_control(
        "DISP:WIND:TRAC:MODE?",
        "DISP:WIND:TRAC:MODE %s",
        """Control trace 1's mode (str): WRIT (clear/write), AVER (average over the sweep count),
        MAXH, MINH, VIEW.""",
        ["WRIT", "AVER", "MAXH", "MINH", "VIEW"],
        "trace mode",
    )
    detector = choice_control(
        "SENS:DET?",
        "SENS:DET %s",
        """Control the detector (str); RMS gives the power in each trace bin.""",
        ["APE", "POS", "NEG", "SAMP", "RMS", "AVER", "QPE"],
        "detector",
    )
    power_unit = choice_control(
        "CALC:UNIT:POW?",
        "CALC:UNIT:POW %s",
        """Control the Y unit of traces (str; the driver reads traces in DBM).""",
        ["DBM", "V", "A", "W", "DBPW", "WATT", "DBUV", "DBMV", "VOLT", "DBUA", "AMP"],
        "power unit",
    )
    power_condition = Instrument.measurement(
        "STAT:QUES:POW:COND?",
        """Get the STATus:QUEStionable:POWer condition register (int; bit 0 RF overload,
        bit 2 IF overload).""",
        get_process=int_reply("questionable power condition"),
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
        """Set up single swept measurements of ``span_Hz`` around ``center_Hz`` (RMS detector,
        coupled sweep time); ``vbw_Hz`` defaults to ``rbw_Hz``; ``averages`` > 1 makes each
        measurement the power average of that many sweeps. Returns the settings the analyser
        took (RBW is rounded)."""
        for name, value in (("center_Hz", center_Hz), ("span_Hz", span_Hz), ("rbw_Hz", rbw_Hz)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of Hz, got {value!r}")
        if span_Hz / 2 > center_Hz:
            raise ConfigError(f"span {span_Hz:g} Hz around {center_Hz:g} Hz would start below 0 Hz")
        if isinstance(points, bool) or not isinstance(points, int) or not 101 <= points <= POINTS_RANGE[1]:
            raise ConfigError(f"points must be an integer 101 .. {POINTS_RANGE[1]}, got {points!r}")
        if isinstance(averages, bool) or not isinstance(averages, int) or not 1 <= averages <= 32767:
            raise ConfigError(f"averages must be an integer 1 .. 32767, got {averages!r}")
        self.continuous = False
        self.power_unit = "DBM"
        self.center_frequency_Hz = center_Hz
        self.span_Hz = span_Hz
        self.rbw_Hz = rbw_Hz
        self.vbw_Hz = rbw_Hz if vbw_Hz is None else vbw_Hz
        self.sweep_time_auto = True
        self.sweep_points = points
        self.reference_level_dBm = reference_level_dBm
        self.detector = "RMS"
        self.trace_mode = "AVER" if averages > 1 else "WRIT"
        self.sweep_count = averages
        self.write(TRANSFER_SETUP)
        self.raise_errors("configuring the sweep")
        return self.settings()

    # --- measurement ---------------------------------------------------------------------------
    def check_status(self) -> None:
        """Raise if the last sweep overloaded the RF input or the IF."""
        condition = self.power_condition
        if condition & (RF_OVERLOAD_BIT | IF_OVERLOAD_BIT):
            stage = "RF input" if condition & RF_OVERLOAD_BIT else "IF"
            raise InstrumentError(
                f"{self.name}: {stage} overload (questionable power {condition}); raise the reference "
                "level or add attenuation, the trace's powers are wrong"
            )


RS_FSV = DriverSpec(
    "rs-fsv",
    "analyser",
    RsFsv,
    r"Rohde ?& ?Schwarz",
    r"FS[VW]-?\d+|FSV3\d{3}",
    RS_FSV_MODEL,
    "R&S FSV/FSW signal and spectrum analyser, swept spectrum, REAL,32 traces",
)

__all__ = ["RS_FSV", "RsFsv"]
