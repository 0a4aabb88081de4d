"""The emulators' SCPI grammar (``sim_backends/emulated/scpi_syntax.py``): one separator scanner
for commands and parameters, so both read a string left open the same way."""

from __future__ import annotations

import pytest

from spinlab.instruments.scpi import parse_error
from spinlab.sim_backends.emulated.awg import Emulated33500B
from spinlab.sim_backends.emulated.keithley import EmulatedKeithley2400
from spinlab.sim_backends.emulated.scpi_syntax import ScpiError, split_at, split_params


def pieces(data: bytes, separator: bytes) -> tuple[list[bytes], int | None]:
    """The pieces the scanner yields before it stops, and the SCPI error it stopped with."""
    found: list[bytes] = []
    try:
        found.extend(data[a:b] for a, b, _ in split_at(data, 0, len(data), [], separator))
    except ScpiError as err:
        return found, err.code
    return found, None


@pytest.mark.parametrize("separator", [b";", b","])
def test_a_string_left_open_runs_to_the_end_of_the_message_between_commands_and_parameters_alike(separator):
    closed = b"1" + separator + b'"a' + separator + b'b"' + separator + b"2"
    assert pieces(closed, separator) == ([b"1", b'"a' + separator + b'b"', b"2"], None)
    left_open = b"1" + separator + b'"a' + separator + b"2"
    assert pieces(left_open, separator) == ([b"1"], -151)


def test_a_command_with_a_string_left_open_in_its_parameters_is_refused_with_invalid_string_data():
    with pytest.raises(ScpiError) as refused:
        split_params(b'1,"a,2', 0, 6, [])
    assert refused.value.code == -151


def test_an_instrument_refuses_a_string_left_open_once_and_answers_what_came_before_it():
    awg = Emulated33500B()
    awg.write(b'*IDN?;FUNC:ARB "spin;*IDN?\n')
    assert awg.read() == awg.IDN.encode() + b"\n"  # the second *IDN? is inside the string
    assert [parse_error(e)[0] for e in awg.errors()] == [-151]
    assert awg.ask("*CLS;*IDN?") == awg.IDN


def test_a_closed_string_keeps_its_separators():
    smu = EmulatedKeithley2400()
    assert smu.ask('SENS:FUNC "CURR:DC","VOLT:DC";*IDN?') == smu.IDN
    assert smu.errors() == []


def test_one_parameter_holds_at_most_one_binary_block():
    data = b"#14abcd#14efgh,1"
    blocks = [(0, 3, 7), (7, 10, 14)]
    with pytest.raises(ScpiError) as refused:
        split_params(data, 0, len(data), blocks)
    assert refused.value.code == -161
    assert [(a.raw, a.block) for a in split_params(data, 7, len(data), blocks[1:])] == [
        (b"efgh", True),
        (b"1", False),
    ]
