"""Lake Shore Model 425 gaussmeter: the field reading that closes the magnet's loop.

Commands from the Model 425 manual (chapter 6) and consistent with pymeasure's ``LakeShore425``:
``RDGFIELD?`` (the field in the present units), ``UNIT 1..4`` (G, T, Oe, A/m), ``RANGE 1..4``
(with the standard high-sensitivity probe: 35 G, 350 G, 3.5 kG, 35 kG), ``AUTO 0/1``, ``*IDN?``.
The 425 has no SCPI error queue, so nothing here reads ``SYST:ERR?``. :meth:`LakeShore425.field_T`
always returns tesla whatever units the front panel shows, and an overloaded reading (``OL``:
the field is beyond the range) raises :class:`~spinlab.errors.InstrumentError` instead of
passing for a number.
"""

from __future__ import annotations

import math
from typing import Any

from pymeasure.instruments import Instrument

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import LAKESHORE_425
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.scpi import RAW_REPLY, ensure_termination, flag_control, parse_float, parse_int

MU0 = 4e-7 * math.pi
#: ``UNIT`` codes and what one reading unit is in tesla (Oe and A/m as mu0 H, in air).
UNITS = {"G": 1, "T": 2, "Oe": 3, "A/m": 4}
TESLA_PER_UNIT = {1: 1e-4, 2: 1.0, 3: 1e-4, 4: MU0}
#: Full scale of ``RANGE 1..4`` in tesla with the 425's standard (high-sensitivity) probe.
RANGES_T = {1: 3.5e-3, 2: 3.5e-2, 3: 0.35, 4: 3.5}


def _unit_reply(reply: Any) -> str:
    code = parse_int(reply, "field units")
    for name, value in UNITS.items():
        if value == code:
            return name
    raise InstrumentError(f"malformed field units from the instrument: expected 1-4, got {reply!r}")


def _range_reply(reply: Any) -> int:
    code = parse_int(reply, "field range")
    if code not in RANGES_T:
        raise InstrumentError(f"malformed field range from the instrument: expected 1-4, got {reply!r}")
    return code


def _unit_setting(value: str, _values: Any = None) -> int:
    if value not in UNITS:
        raise ValueError(f"field units must be one of {list(UNITS)}, got {value!r}")
    return UNITS[value]


def _reading_mode_setting(value: Any, _values: Any = None) -> tuple[int, int, int]:
    mode = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(mode) != 3 or mode[0] not in (1, 2) or mode[1] not in (0, 1) or mode[2] not in (1, 2):
        raise ValueError(f"reading mode must be (mode 1|2, filter 0|1, band 1|2), got {value!r}")
    return (int(mode[0]), int(mode[1]), int(mode[2]))


def _reading_mode_reply(reply: Any) -> tuple[int, int, int]:
    try:
        return _reading_mode_setting(tuple(int(x) for x in str(reply).strip().split(",")))
    except ValueError:
        raise InstrumentError(
            f"malformed reading mode from the instrument: expected mode,filter,band, got {reply!r}"
        ) from None


def _range_setting(value: int, _values: Any = None) -> int:
    if value not in RANGES_T:
        raise ValueError(f"field range must be 1-4 (35 G .. 35 kG), got {value!r}")
    return value


class LakeShore425(Instrument):
    """Lake Shore 425 gaussmeter (USB serial 57600 7O1, or a serial/GPIB bridge)."""

    def __init__(self, adapter, name: str = "Lake Shore 425 gaussmeter", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault(
            "asrl", {"baud_rate": 57600, "data_bits": 7, "parity": 1, "stop_bits": 10}
        )  # odd parity, 1 stop bit
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        ensure_termination(self.adapter)

    id = Instrument.measurement(
        "*IDN?", """Get the identification (LSCI,MODEL425,serial,firmware).""", **RAW_REPLY
    )
    unit = Instrument.control(
        "UNIT?",
        "UNIT %d",
        """Control the reading units: "G", "T", "Oe" or "A/m".""",
        validator=_unit_setting,
        get_process=_unit_reply,
        **RAW_REPLY,
    )
    range = Instrument.control(
        "RANGE?",
        "RANGE %d",
        """Control the manual range, 1-4 (35 G, 350 G, 3.5 kG, 35 kG full scale); turns auto off.""",
        validator=_range_setting,
        get_process=_range_reply,
        **RAW_REPLY,
    )
    auto_range = flag_control("AUTO?", "AUTO %d", """Control automatic ranging (bool).""", "auto range")
    reading_mode = Instrument.control(
        "RDGMODE?",
        "RDGMODE %d,%d,%d",
        """Control (mode, filter, band): mode 1 = DC, 2 = RMS; filter 0/1 = off/on; band 1 = wide,
        2 = narrow. A closed field loop wants (1, 1, 1): DC with the filter on.""",
        validator=_reading_mode_setting,
        get_process=_reading_mode_reply,
        **RAW_REPLY,
    )
    probe_type = Instrument.measurement(
        "TYPE?",
        """Get the probe type (40 high sensitivity, 41 high stability, 42 ultra-high sensitivity;
        50-52 the same with a user-programmable cable).""",
        get_process=lambda reply: parse_int(reply, "probe type"),
        **RAW_REPLY,
    )

    def zero_probe(self) -> None:
        """Start the zero-field calibration (``ZPROBE``); the probe must be in its zero-gauss chamber."""
        self.write("ZPROBE")

    def field(self) -> float:
        """The field in the present units; an overload or a NaN (9.9E+37) raises InstrumentError."""
        reply = self.ask("RDGFIELD?").strip()
        if reply.lstrip("+-").upper() == "OL":
            raise InstrumentError(
                f"{self.name} is overloaded ({reply!r}): the field is beyond the selected range; "
                "select a higher RANGE or turn AUTO on"
            )
        field = parse_float(reply, "field reading")
        if not math.isfinite(field):
            raise InstrumentError(f"{self.name} sent a field reading that is not a number: {reply!r}")
        return field

    def field_T(self) -> float:
        """The field in tesla, whatever units the meter displays (someone may change them at the
        front panel, so they are read with every reading)."""
        return self.field() * TESLA_PER_UNIT[UNITS[self.unit]]

    def range_T(self) -> float:
        """Full scale of the present range in tesla."""
        return RANGES_T[self.range]

    def check_errors(self) -> list[tuple[int, str]]:
        """The 425 has no error queue: nothing to read (its replies are checked one by one)."""
        return []

    def clear_errors(self) -> list[tuple[int, str]]:
        """The 425 has no error queue: nothing to clear."""
        return []


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
LAKESHORE_425_DRIVER = DriverSpec(
    "lakeshore-425",
    "gaussmeter",
    LakeShore425,
    r"LSCI",
    r"MODEL\s*425",
    LAKESHORE_425,
    "Lake Shore 425 gaussmeter with its standard high-sensitivity probe",
)
