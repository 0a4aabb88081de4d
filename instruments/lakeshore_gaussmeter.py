"""Lake Shore gaussmeters, Models 425 and 475 DSP: the field reading that closes the magnet's loop.

Both speak Lake Shore's own commands (chapter 6 of each manual), not SCPI subsystems, and share
what the station reads: ``RDGFIELD?`` (the field in the present units), ``UNIT 1..4`` (G, T, Oe,
A/m), ``RANGE``, ``AUTO 0/1``, ``TYPE?`` (the probe), ``ZPROBE``, ``*IDN?``; that lives in
:class:`LakeShoreGaussmeter`. They differ where a reading's meaning does: the 425 (consistent with
pymeasure's ``LakeShore425``) has four ranges, 35 G .. 35 kG with its standard probe, and
``RDGMODE <mode>,<filter>,<band>``; the 475 has up to five ranges whose full scale depends on the
probe (:data:`RANGES_T_475`) and ``RDGMODE <mode>,<dc resolution>,<rms filter>,<peak mode>,<peak
display>``, its DC averaging set by the resolution. Neither has a SCPI error queue, so nothing
here reads ``SYST:ERR?``. ``field_T()`` always returns tesla whatever units the front panel shows,
and an overloaded reading (``OL``: the field is beyond the range) or a missing probe raises
:class:`~spinlab.errors.InstrumentError` instead of passing for a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pymeasure.instruments import Instrument

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import LAKESHORE_425, LAKESHORE_475
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.scpi import RAW_REPLY, ensure_termination, flag_control, parse_float, parse_int

MU0 = 4e-7 * math.pi
#: ``UNIT`` codes and what one reading unit is in tesla (Oe and A/m as mu0 H, in air).
UNITS = {"G": 1, "T": 2, "Oe": 3, "A/m": 4}
TESLA_PER_UNIT = {1: 1e-4, 2: 1.0, 3: 1e-4, 4: MU0}
#: Full scale of ``RANGE 1..4`` in tesla with the 425's standard (high-sensitivity) probe.
RANGES_T = {1: 3.5e-3, 2: 3.5e-2, 3: 0.35, 4: 3.5}
#: Full scale of the 475's ``RANGE 1..`` in tesla by probe ``TYPE?`` (its specifications: 40 high
#: sensitivity 3.5 G .. 35 kG, 41 high stability 35 G .. 350 kG, 42 ultra-high sensitivity
#: 35 mG .. 35 G); 50-52, the same probes on a user-programmable cable, share them.
RANGES_T_475 = {
    40: (3.5e-4, 3.5e-3, 3.5e-2, 0.35, 3.5),
    41: (3.5e-3, 3.5e-2, 0.35, 3.5, 35.0),
    42: (3.5e-6, 3.5e-5, 3.5e-4, 3.5e-3),
}


def _unit_reply(reply: Any) -> str:
    code = parse_int(reply, "field units")
    for name, value in UNITS.items():
        if value == code:
            return name
    raise InstrumentError(f"malformed field units from the instrument: expected 1-4, got {reply!r}")


def _unit_setting(value: str, _values: Any = None) -> int:
    if value not in UNITS:
        raise ValueError(f"field units must be one of {list(UNITS)}, got {value!r}")
    return UNITS[value]


def _codes(
    what: str, allowed: tuple[range, ...], form: str
) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """The validator and reply check of a comma-separated list of codes (``RDGMODE``): a setting
    outside ``allowed`` is a ValueError before anything is sent, a reply outside it an
    InstrumentError quoting the reply."""

    def setting(value: Any, _values: Any = None) -> tuple[int, ...]:
        codes = tuple(value) if isinstance(value, (tuple, list)) else ()
        if len(codes) != len(allowed) or not all(
            isinstance(c, int) and c in ok for c, ok in zip(codes, allowed, strict=True)
        ):
            raise ValueError(f"{what} must be ({form}), got {value!r}")
        return codes

    def reply(text: Any) -> tuple[int, ...]:
        try:
            return setting(tuple(int(x) for x in str(text).strip().split(",")))
        except ValueError:
            raise InstrumentError(
                f"malformed {what} from the instrument: expected {form}, got {text!r}"
            ) from None

    return setting, reply


def _range_codes(top: int) -> tuple[Callable[..., int], Callable[[Any], int]]:
    """The validator and reply check of ``RANGE 1..top``."""

    def setting(value: int, _values: Any = None) -> int:
        if not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"field range must be 1-{top} (1 the most sensitive), got {value!r}")
        return value

    def reply(text: Any) -> int:
        code = parse_int(text, "field range")
        if not 1 <= code <= top:
            raise InstrumentError(
                f"malformed field range from the instrument: expected 1-{top}, got {text!r}"
            )
        return code

    return setting, reply


_MODE_425 = _codes("reading mode", (range(1, 3), range(0, 2), range(1, 3)), "mode 1|2, filter 0|1, band 1|2")
_MODE_475 = _codes(
    "reading mode",
    (range(1, 4), range(1, 4), range(1, 4), range(1, 3), range(1, 4)),
    "mode 1-3, dc resolution 1-3, rms filter 1-3, peak mode 1|2, peak display 1-3",
)
_RANGE_425 = _range_codes(4)
_RANGE_475 = _range_codes(5)


class LakeShoreGaussmeter(Instrument):
    """What the Lake Shore 425 and 475 share: units, autorange, the probe, the reading in tesla.
    Each model adds its ``range`` and ``reading_mode``, ``range_T()`` (full scale of the present
    range) and ``measure_dc()`` (the averaged DC reading a closed field loop wants)."""

    def __init__(self, adapter, name: str, baud_rate: int, **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        # 7 data bits, odd parity, 1 stop bit on both models' serial ports
        kwargs.setdefault("asrl", {"baud_rate": baud_rate, "data_bits": 7, "parity": 1, "stop_bits": 10})
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        ensure_termination(self.adapter)

    id = Instrument.measurement(
        "*IDN?", """Get the identification (LSCI,MODEL425 or MODEL475,serial,firmware).""", **RAW_REPLY
    )
    unit = Instrument.control(
        "UNIT?",
        "UNIT %d",
        """Control the reading units: "G", "T", "Oe" or "A/m".""",
        validator=_unit_setting,
        get_process=_unit_reply,
        **RAW_REPLY,
    )
    auto_range = flag_control("AUTO?", "AUTO %d", """Control automatic ranging (bool).""", "auto range")
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
        """The field in the present units; an overload, no probe or a NaN (9.9E+37) raises
        InstrumentError."""
        reply = self.ask("RDGFIELD?").strip()
        if reply.lstrip("+-").upper() == "OL":
            raise InstrumentError(
                f"{self.name} is overloaded ({reply!r}): the field is beyond the selected range; "
                "select a higher RANGE or turn AUTO on"
            )
        if reply.upper() == "NO PROBE":
            raise InstrumentError(f"{self.name} has no probe attached: it answers {reply!r}")
        field = parse_float(reply, "field reading")
        if not math.isfinite(field):
            raise InstrumentError(f"{self.name} sent a field reading that is not a number: {reply!r}")
        return field

    def field_T(self) -> float:
        """The field in tesla, whatever units the meter displays (someone may change them at the
        front panel, so they are read with every reading)."""
        return self.field() * TESLA_PER_UNIT[UNITS[self.unit]]

    def check_errors(self) -> list[tuple[int, str]]:
        """No error queue on these meters: nothing to read (their replies are checked one by one)."""
        return []

    def clear_errors(self) -> list[tuple[int, str]]:
        """No error queue on these meters: nothing to clear."""
        return []


class LakeShore425(LakeShoreGaussmeter):
    """Lake Shore 425 gaussmeter (USB serial 57600 7O1, or a serial/GPIB bridge)."""

    def __init__(self, adapter, name: str = "Lake Shore 425 gaussmeter", **kwargs: Any) -> None:
        super().__init__(adapter, name, 57600, **kwargs)

    range = Instrument.control(
        "RANGE?",
        "RANGE %d",
        """Control the manual range, 1-4 (35 G, 350 G, 3.5 kG, 35 kG full scale); turns auto off.""",
        validator=_RANGE_425[0],
        get_process=_RANGE_425[1],
        **RAW_REPLY,
    )
    reading_mode = Instrument.control(
        "RDGMODE?",
        "RDGMODE %d,%d,%d",
        """Control (mode, filter, band): mode 1 = DC, 2 = RMS; filter 0/1 = off/on; band 1 = wide,
        2 = narrow. A closed field loop wants (1, 1, 1): DC with the filter on.""",
        validator=_MODE_425[0],
        get_process=_MODE_425[1],
        **RAW_REPLY,
    )

    def measure_dc(self) -> None:
        """DC with the filter on, wide band (``RDGMODE 1,1,1``)."""
        self.reading_mode = (1, 1, 1)

    def range_T(self) -> float:
        """Full scale of the present range in tesla."""
        return RANGES_T[self.range]


class LakeShore475(LakeShoreGaussmeter):
    """Lake Shore 475 DSP gaussmeter (IEEE-488, or serial at its default 9600 baud 7O1)."""

    def __init__(self, adapter, name: str = "Lake Shore 475 gaussmeter", **kwargs: Any) -> None:
        super().__init__(adapter, name, 9600, **kwargs)

    range = Instrument.control(
        "RANGE?",
        "RANGE %d",
        """Control the manual range, 1 (most sensitive) to 4 or 5 as the probe has them (see
        :data:`RANGES_T_475`); turns auto off.""",
        validator=_RANGE_475[0],
        get_process=_RANGE_475[1],
        **RAW_REPLY,
    )
    reading_mode = Instrument.control(
        "RDGMODE?",
        "RDGMODE %d,%d,%d,%d,%d",
        """Control (mode, dc resolution, rms filter, peak mode, peak display): mode 1 = DC, 2 = RMS,
        3 = peak; dc resolution 1-3 = 3 3/4, 4 3/4 or 5 3/4 digits (more digits, more averaging); rms filter
        1 = wide band, 2 = narrow band, 3 = low pass; peak mode 1 = periodic, 2 = pulse; peak
        display 1 = positive, 2 = negative, 3 = both.""",
        validator=_MODE_475[0],
        get_process=_MODE_475[1],
        **RAW_REPLY,
    )

    def measure_dc(self) -> None:
        """DC at 5 3/4 digits, the 475's most averaged reading (``RDGMODE 1,3,1,1,1``)."""
        self.reading_mode = (1, 3, 1, 1, 1)

    def range_T(self) -> float:
        """Full scale of the present range in tesla, from the probe's range table."""
        probe = self.probe_type
        ranges = RANGES_T_475.get(probe - 10 if probe in (50, 51, 52) else probe)
        if ranges is None:
            raise InstrumentError(
                f"{self.name} reports an unknown probe type {probe}: its ranges are unknown"
            )
        code = self.range
        if code > len(ranges):
            raise InstrumentError(f"{self.name} reports range {code}, which its probe (type {probe}) lacks")
        return ranges[code - 1]


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
LAKESHORE_475_DRIVER = DriverSpec(
    "lakeshore-475",
    "gaussmeter",
    LakeShore475,
    r"LSCI",
    r"MODEL\s*475",
    LAKESHORE_475,
    "Lake Shore 475 DSP gaussmeter with a high-sensitivity probe",
)
