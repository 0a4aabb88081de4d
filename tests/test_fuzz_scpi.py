"""Fuzzing SCPI at both ends of the wire: the drivers' reply parsers and block reader, and the
emulated instruments' message parser and command core.

Driver side, anything an instrument may send ends in a value or an
:class:`~spinlab.errors.InstrumentError`. Emulator side, :meth:`ScpiInstrument.write` takes any
bytes without raising: malformed input only queues SCPI errors (which the driver's own
``SYST:ERR?`` parser reads back), and after a device clear the instrument answers ``*IDN?``.
Any other exception is a bug in spinlab.

By default each target runs a few hundred derandomised examples (hypothesis profile ``ci``, see
``tests/conftest.py``). A long random campaign::

    SPINLAB_FUZZ_PROFILE=fuzz SPINLAB_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_scpi.py

or, for every fuzz module at once, ``.venv/bin/python -m pytest -m slow tests/test_fuzz_100k.py``.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pyvisa.util import to_ieee_block

from spinlab.errors import InstrumentError
from spinlab.instruments import scpi
from spinlab.instruments.keysight_scope import PREAMBLE_FIELDS, parse_preamble
from spinlab.sim_backends.emulated.awg import Emulated33500B
from spinlab.sim_backends.emulated.keithley import EmulatedKeithley2400
from spinlab.sim_backends.emulated.scope import EmulatedInfiniiVision
from spinlab.sim_backends.emulated.scpi_syntax import (
    ERROR_MESSAGES,
    ScpiError,
    scan_message,
    split_params,
    split_units,
)

# --- replies an instrument might send -------------------------------------------------------
numbers = (
    st.floats().map(repr)
    | st.integers(-(10**30), 10**30).map(str)
    | st.floats().map(lambda x: f"{x:+.14E}" if math.isfinite(x) else str(x))
    | st.sampled_from(
        [
            "9.9E+37",
            "-9.9E37",
            "INF",
            "+inf",
            "NaN",
            "1e999",
            "-1e999",
            "1" * 5000,
            "+0",
            "0.0",
            "1.",
            ".5",
            "1e",
            "--1",
            "0x10",
            "١٢",
            "1_000",
            " 7 \n",
        ]
    )
)
replies = numbers | st.text(max_size=20) | st.from_regex(r"\A\s*[+-]?\d{0,6}(\.\d*)?([eE][+-]?\d{0,4})?\s*\Z")


def value_or_instrument_error(parse, reply):
    try:
        return parse(reply)
    except InstrumentError:
        return None


@given(replies | st.floats() | st.integers(-(10**400), 10**400) | st.booleans() | st.none())
@example(10**400)  # was: OverflowError in float()
@example("INF")  # was: OverflowError in parse_int
@example(math.nan)
def test_numeric_reply_parsers_return_a_value_or_raise_instrument_error(reply):
    value = value_or_instrument_error(scpi.parse_float, reply)
    assert value is None or isinstance(value, float)
    number = value_or_instrument_error(scpi.parse_int, reply)
    assert number is None or (isinstance(number, int) and number == value)
    flag = value_or_instrument_error(scpi.parse_bool, reply)
    assert flag is None or flag is bool(value)
    choice = value_or_instrument_error(scpi.parse_choice(["NORMal", "NORM", "AVER"], "mode"), reply)
    assert choice is None or choice in {"NORMAL", "NORM", "AVER"}


error_replies = (
    st.builds(
        lambda code, msg: f'{code},"{msg}"',
        st.integers(-(10**6), 10**6).map(str) | st.just("1" * 5000),
        st.text(max_size=20),
    )
    | st.from_regex(r'\A\s*[+-]?\d{1,5}\s*,\s*".*"\s*\Z')
    | replies
)


@given(error_replies)
@example("1" * 5000 + ',"x"')  # was: ValueError, int() digit limit
def test_error_queue_entries_parse_or_raise_instrument_error(reply):
    entry = value_or_instrument_error(scpi.parse_error, reply)
    assert entry is None or (isinstance(entry[0], int) and isinstance(entry[1], str))


@given(st.lists(error_replies, min_size=1, max_size=70), st.integers(1, 70))
def test_draining_any_error_queue_ends_in_a_list_or_instrument_error(queue, limit):
    answers = iter(queue + ['+0,"No error"'])
    try:
        errors = scpi.drain_errors(lambda query: next(answers), limit=limit)
    except InstrumentError:
        return
    assert len(errors) < limit and all(code != 0 for code, _ in errors)


class Wire:
    """The bytes an instrument sent, read as pyvisa's ``read_bytes`` would: a short read at
    the end, then a timeout."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read_bytes(self, count: int) -> bytes:
        if self.pos >= len(self.data):
            raise TimeoutError("VI_ERROR_TMO")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += len(chunk)
        return chunk


@st.composite
def block_replies(draw):
    payload = draw(st.binary(max_size=40))
    block = bytearray(to_ieee_block(payload, "B") + b"\n")
    for pos, byte in draw(
        st.lists(st.tuples(st.integers(0, len(block) - 1), st.integers(0, 255)), max_size=2)
    ):
        block[pos] = byte
    cut = draw(st.integers(0, len(block)))
    return bytes(block[:cut] + draw(st.binary(max_size=4))) if draw(st.booleans()) else bytes(block)


@given(
    block_replies()
    | st.binary(max_size=30)
    | st.from_regex(rb"\A#[0-9][0-9]{0,12}", fullmatch=False).map(bytes),
    st.none() | st.integers(0, 50),
)
def test_read_block_returns_exactly_the_declared_payload_or_raises_instrument_error(data, expected):
    wire = Wire(data)
    try:
        payload = scpi.read_block(wire, expected_bytes=expected)
    except InstrumentError:
        return
    assert data[: wire.pos] == to_ieee_block(payload, "B") + b"\n"
    assert expected is None or len(payload) == expected


fields = numbers | st.sampled_from(["+1", "+0", "+4", "+2", "+3", "+1000", "-1", "1e-9", "+2.0E-10"])


@given(st.lists(fields, min_size=9, max_size=11).map(",".join) | st.text(max_size=40))
def test_scope_preamble_parses_to_validated_fields_or_raises_instrument_error(reply):
    pre = value_or_instrument_error(parse_preamble, reply)
    if pre is not None:
        assert set(pre) == set(PREAMBLE_FIELDS)
        assert pre["points"] >= 0 and pre["count"] >= 1
        assert math.isfinite(pre["x_increment_s"]) and pre["x_increment_s"] > 0
        assert math.isfinite(pre["y_origin_V"]) and pre["y_increment_V"] > 0


# --- what a client might send an emulated instrument ----------------------------------------
#: Real commands of the three instruments, to be combined, cut and corrupted.
COMMANDS = [
    b"*IDN?",
    b"*RST",
    b"*CLS",
    b"*OPC?",
    b"*ESR?",
    b"*STB?",
    b"*TRG",
    b"*WAI",
    b"SYST:ERR?",
    b":SYSTem:ERRor:COUNt?",
    b"FUNC ARB",
    b"FUNC:ARB:SRAT 1e6",
    b"SOUR1:VOLT 0.2",
    b"VOLT:OFFS 0",
    b"OUTP ON",
    b"OUTP:LOAD INF",
    b"FORM:BORD SWAP",
    b"BURS:STAT ON",
    b"BURS:NCYC 1",
    b"TRIG:SOUR BUS",
    b"DATA:VOL:CLE",
    b"DATA:ARB:DAC spin,#216" + bytes(range(16)),
    b"DATA:ARB spin,0.1,-0.2,0.3",
    b"FUNC:ARB spin",
    b"DATA:ARB:DAC x,#0" + b"\x01\x02",
    b"TRIG",
    b":CHAN1:SCAL 0.05",
    b":CHANnel2:OFFSet -1e-3",
    b":TIM:RANG 1e-6",
    b":TIMebase:POSition 5e-7",
    b":TRIG:SOUR EXT",
    b":TRIG:LEV 1,EXT",
    b":ACQ:MODE SEGM",
    b":ACQ:SEGM:COUN 3",
    b":ACQ:POIN 1000",
    b":ACQ:SRAT 1e9",
    b":WAV:FORM WORD",
    b":WAV:SOUR CHAN1",
    b":WAV:POIN:MODE RAW",
    b":WAV:PRE?",
    b":WAV:DATA?",
    b":DIG CHAN1",
    b":SING",
    b":RUN",
    b":STOP",
    b":TRIG:FORC",
    b":OPER:COND?",
    b":TER?",
    b":SOUR:FUNC CURR",
    b":SOUR:CURR 7.5e-3",
    b":SOUR:CURR:LEV 1e9",
    b":SENS:VOLT:PROT 21",
    b":READ?",
    b":MEAS:VOLT?",
    b":FORM:ELEM VOLT,CURR",
    b'SENS:FUNC "CURR:DC"',
    b":TRAC:DATA?",
    b"INIT",
]
pieces = (
    st.sampled_from(COMMANDS)
    | st.binary(max_size=12)
    | st.sampled_from(
        [
            b"\n",
            b";",
            b":",
            b",",
            b'"',
            b"#",
            b"#9",
            b"#3100",
            b"#0",
            b"?",
            b" ",
            b"\r",
            b"1" * 30,
            b"1e999",
            b"nan",
            b"-inf",
            b"\xff",
            b"CHAN99:SCAL 1",
            b"CHAN" + b"9" * 5000,
        ]
    )
)
#: Arguments with many digits: beyond int64, beyond Python's int() digit limit.
long_numbers = st.sampled_from([b"9" * 30, b"9" * 5000, b"CHAN" + b"9" * 5000, b"-" + b"9" * 20])
#: A real header with arguments of any kind: reaches every handler with hostile parameters.
arguments = (
    numbers.map(str.encode)
    | st.binary(max_size=8)
    | long_numbers
    | st.sampled_from(
        [
            b"MIN",
            b"MAX",
            b"DEF",
            b"INF",
            b"AUTO",
            b"ON",
            b"OFF",
            b'"q"',
            b"'x'",
            b"CHAN5",
            b"EXT",
            b"#14abcd",
            b"#0\x00\x01",
            b"#15ab",
            b"1,2",
            b"",
            b"1e-300",
            b"-0",
        ]
    )
)
commands = st.builds(
    lambda header, args: header + b" " + b",".join(args),
    st.sampled_from(sorted({c.split(b" ")[0].rstrip(b"?") for c in COMMANDS})),
    st.lists(arguments, max_size=3),
)
streams = st.lists(pieces | commands, max_size=12).map(
    lambda parts: b"\n".join(parts) if parts and len(parts) % 2 else b"".join(parts)
)
instruments = st.sampled_from([Emulated33500B, EmulatedInfiniiVision, EmulatedKeithley2400])


#: How the core reports a handler that raised something other than ScpiError (a bug).
_CRASH_RE = re.compile(r'^-200,"Execution error; [A-Za-z]+(Error|Exception)\b')


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(instruments, streams, st.lists(st.integers(0, 400), max_size=4))
@example(Emulated33500B, b"DATA:ARB:DAC x,1,1,1,1,1,1,1," + b"9" * 30 + b"\n", [])  # was: OverflowError
@example(EmulatedInfiniiVision, b":WAV:SOUR CHAN" + b"9" * 5000 + b"\n", [])  # was: int() digit limit
def test_emulated_instruments_take_any_bytes_queue_only_scpi_errors_and_stay_usable(make, data, cuts):
    instrument = make(memory_samples=4096) if make is Emulated33500B else make()
    for chunk in chunked(data, cuts):
        instrument.write(chunk)  # never raises
    instrument.read()
    assert instrument.error_count <= instrument.ERROR_QUEUE_DEPTH
    assert not [e for e in instrument.errors() if _CRASH_RE.search(e)], "a handler crashed"
    instrument.device_clear()  # what a VISA client does after a broken exchange
    errors = scpi.drain_errors(instrument.ask, limit=instrument.ERROR_QUEUE_DEPTH + 1)
    assert all(code in ERROR_MESSAGES or code > 0 for code, _ in errors)
    assert instrument.ask("*IDN?") == instrument.IDN
    assert instrument.ask("SYST:ERR?") == '+0,"No error"'


@given(streams, st.integers(0, 40))
def test_message_scanner_finds_terminated_messages_with_their_blocks(data, start):
    start = min(start, len(data))
    found = scan_message(data, start)
    if found is None:
        return
    end, blocks = found
    assert data[end : end + 1] == b"\n" and start <= end
    previous = start
    for hash_, payload_start, payload_end in blocks:
        assert previous <= hash_ < payload_start <= payload_end <= end and data[hash_ : hash_ + 1] == b"#"
        previous = payload_end
    units = []
    try:
        units.extend(split_units(data, start, end, blocks))
    except ScpiError as err:
        assert err.code == -151  # a string left open, after the units before it
    for unit_start, unit_end, unit_blocks in units:
        assert start <= unit_start <= unit_end <= end
        assert all(unit_start <= b[0] < unit_end for b in unit_blocks)
        try:
            args = split_params(data, unit_start, unit_end, unit_blocks)
        except ScpiError as err:
            assert err.code in ERROR_MESSAGES
            continue
        assert all(arg.raw or arg.block for arg in args)


@given(instruments, streams, st.lists(st.integers(0, 400), max_size=4))
@example(Emulated33500B, b'OUTP "x\n*IDN?;"y"\n*IDN?\n', [6])  # was: a later quote swallowed the newline
def test_emulated_instruments_parse_a_byte_stream_the_same_however_it_is_chunked(make, data, cuts):
    assume(b"READ" not in data.upper())  # the 2400's reading carries a time stamp
    whole, parts = make(), make()
    whole.write(data)
    for chunk in chunked(data, cuts):
        parts.write(chunk)
    assert parts.read() == whole.read()
    assert parts.errors() == whole.errors()


@pytest.mark.parametrize(
    "message, code",
    [(b":ACQ:POIN 1e999", -222), (b":ACQ:SEGM:COUN inf", -222), (b":CHAN" + b"9" * 5000 + b":SCAL 1", -114)],
)
def test_numbers_and_suffixes_out_of_any_range_are_range_errors(message, code):
    scope = EmulatedInfiniiVision()
    scope.write(message + b"\n")
    assert [scpi.parse_error(e)[0] for e in scope.errors()] == [code]


def test_a_record_never_exceeds_the_scope_memory_whatever_rate_and_range_ask_for():
    scope = EmulatedInfiniiVision()
    scope.write(b":ACQ:SRAT 5e9\n:TIM:RANG 1\n:SING\n")  # 5 G points asked: was a 37 GiB allocation
    assert scope.errors() == [] and scope.record_points() == 4_000_000
    assert parse_preamble(scope.ask(":WAV:PRE?"))["points"] == 1000  # a NORMal transfer of it
