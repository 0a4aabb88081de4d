"""SCPI helpers shared by the drivers: binary blocks, reply parsing and the error queue.

Everything that comes back from an instrument is checked here, so a malformed reply becomes an
:class:`~spinlab.errors.InstrumentError` that quotes the raw reply instead of a ``ValueError``
deep inside numpy. Binary transfers never loop over samples in Python: blocks are read with one
``read_bytes`` per part and decoded with ``numpy.frombuffer``.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from spinlab.errors import InstrumentError

_ERROR_RE = re.compile(r'^\s*([+-]?\d{1,10})\s*,\s*"(.*)"\s*$', re.S)
_NUMBER_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
#: Most errors an instrument queue holds; draining stops there so a stuck queue cannot hang us.
MAX_QUEUED_ERRORS = 64


# --- IEEE 488.2 definite-length blocks ---------------------------------------------------------
# Writing uses pyvisa's ``to_ieee_block`` (through ``Instrument.write_binary_values``). Reading
# keeps its own reader: pyvisa's ``read_binary_values`` reads whatever length the header
# declares, and the bench needs that length checked against the preamble's point count, plus
# one clear error for a short, padded or unterminated block.
def ascii_values(reply: str, what: str) -> np.ndarray:
    """A comma-separated reply of numbers as floats (parsed by numpy: a megasample in a fraction
    of a second); anything else is an InstrumentError naming ``what``."""
    text = reply.strip()
    try:
        return np.array(text.split(",") if text else [], dtype=np.float64)
    except ValueError:
        raise InstrumentError(f"malformed {what} from the instrument: {text[:60]!r}...") from None


@contextmanager
def termination_off(instrument: Any) -> Iterator[None]:
    """Read with the VISA termination character off, then put it back.

    A binary payload (``REAL,32`` floats above all) holds ``0x0A`` bytes; with the termination
    character on, each one ends a VISA read, and pyvisa stitches the block from thousands of short
    reads (seconds for a megabyte). Connections without one (a test adapter) are left alone."""
    connection = getattr(getattr(instrument, "adapter", None), "connection", None)
    termination = getattr(connection, "read_termination", None)
    if not termination:
        yield
        return
    connection.read_termination = None
    try:
        yield
    finally:
        connection.read_termination = termination


def read_block(instrument: Any, expected_bytes: int | None = None, terminator: bytes = b"\n") -> bytes:
    """Read one definite-length block reply from ``instrument`` (anything with ``read_bytes``).

    Reads the ``#n`` header, the length field and the payload with one ``read_bytes`` each,
    then the reply terminator. A short payload, a wrong terminator (the instrument sent more
    than it declared) or a length other than ``expected_bytes`` raise InstrumentError.
    """
    try:
        head = instrument.read_bytes(2)
        if len(head) != 2 or head[:1] != b"#" or not head[1:2].isdigit() or head == b"#0":
            raise InstrumentError(f"expected an IEEE 488.2 definite-length block, got {head!r}")
        digits = int(head[1:2])
        field = instrument.read_bytes(digits)
        if len(field) != digits or not field.isdigit():
            raise InstrumentError(f"malformed block header {head + field!r}")
        length = int(field)
        payload = instrument.read_bytes(length) if length else b""
        if len(payload) != length:
            raise InstrumentError(f"block declares {length} bytes but only {len(payload)} arrived")
        tail = instrument.read_bytes(len(terminator)) if terminator else b""
    except InstrumentError:
        raise
    except Exception as exc:  # VisaIOError (timeout), socket errors
        raise InstrumentError(
            f"reading a binary block failed ({type(exc).__name__}: {exc}); the instrument sent "
            "fewer bytes than its block header declared, or nothing at all"
        ) from exc
    if tail != terminator:
        raise InstrumentError(
            f"binary block of {length} bytes is followed by {tail!r}, not the terminator "
            f"{terminator!r}: the instrument sent more data than its header declared"
        )
    if expected_bytes is not None and length != expected_bytes:
        raise InstrumentError(
            f"binary block has {length} bytes but {expected_bytes} were expected from the "
            "preamble; the transfer is inconsistent, re-acquire"
        )
    return payload


def ensure_termination(adapter: Any, termination: str = "\n") -> None:
    """Give a pyvisa connection the instrument's message terminator if it has none.

    A driver handed a ready-made ``VISAAdapter`` cannot rely on its ``**kwargs`` defaults, and
    a socket resource without a read termination only returns on timeout."""
    try:
        from pyvisa.resources import MessageBasedResource
    except ImportError:  # pragma: no cover
        return
    connection = getattr(adapter, "connection", None)
    if isinstance(connection, MessageBasedResource):
        if not connection.read_termination:
            connection.read_termination = termination
        if not connection.write_termination:
            connection.write_termination = termination


def send_at_once(adapter: Any) -> None:
    """Switch Nagle's algorithm off on a LAN socket connection, as the VISA specification's
    default for ``VI_ATTR_TCPIP_NODELAY`` has it (NI-VISA does).

    With it on, a command written right after another waits until the instrument acknowledges
    the first, which an instrument with nothing to reply delays by up to 40 ms: 43 ms against
    0.5 ms for write, write, query on the emulated AWG over TCP. pyvisa-py 0.8 leaves it on and
    refuses to set the attribute, so there the option goes on its session's socket."""
    try:
        from pyvisa import constants
        from pyvisa.resources import TCPIPSocket
    except ImportError:  # pragma: no cover
        return
    connection = getattr(adapter, "connection", None)
    if not isinstance(connection, TCPIPSocket):
        return
    try:
        connection.set_visa_attribute(constants.ResourceAttribute.tcpip_nodelay, constants.VI_TRUE)
    except Exception:
        session = getattr(connection.visalib, "sessions", {}).get(connection.session)
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --- waiting ---------------------------------------------------------------------------------
def poll_until(
    done: Callable[[], bool], timeout_s: float, what: str, *, first_s: float = 1e-4, max_s: float = 0.02
) -> None:
    """Call ``done()`` with exponentially growing pauses (``first_s`` up to ``max_s``) until it
    returns True; after ``timeout_s`` raise InstrumentError saying ``what`` did not happen.
    ``done`` may raise to stop early (an instrument in a state that can never get there)."""
    deadline = time.monotonic() + float(timeout_s)
    delay = first_s
    while not done():
        if time.monotonic() >= deadline:
            raise InstrumentError(f"{what} (waited {timeout_s:g} s)")
        time.sleep(delay)
        delay = min(2 * delay, max_s)


# --- replies -----------------------------------------------------------------------------------
def parse_float(reply: Any, what: str = "reply") -> float:
    """A numeric reply; anything else raises InstrumentError quoting it."""
    if isinstance(reply, (int, float)) and not isinstance(reply, bool) and reply == reply:  # not NaN
        return _scpi_number(reply)
    text = str(reply).strip()
    if _NUMBER_RE.match(text):
        return _scpi_number(text)
    if text.upper() in ("INF", "+INF", "9.9E+37", "+9.9E+37", "9.9E37"):
        return float("inf")
    raise InstrumentError(f"malformed {what} from the instrument: expected a number, got {reply!r}")


def _scpi_number(value: Any) -> float:
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf if value > 0 else -math.inf
    # SCPI sends infinity (e.g. a high-Z load setting) as 9.9E+37
    return math.copysign(math.inf, number) if abs(number) >= 9.9e37 else number


def parse_int(reply: Any, what: str = "reply") -> int:
    value = parse_float(reply, what)
    if not math.isfinite(value) or value != int(value):
        raise InstrumentError(f"malformed {what} from the instrument: expected an integer, got {reply!r}")
    return int(value)


def parse_bool(reply: Any, what: str = "reply") -> bool:
    text = str(reply).strip().upper()
    if text in ("1", "+1", "ON", "1.0"):
        return True
    if text in ("0", "+0", "OFF", "0.0"):
        return False
    raise InstrumentError(f"malformed {what} from the instrument: expected 0/1, got {reply!r}")


def parse_choice(choices: Sequence[str], what: str) -> Callable[[Any], str]:
    """A get_process that accepts only one of ``choices`` (upper-cased, quotes stripped)."""
    allowed = {c.upper() for c in choices}

    def process(reply: Any) -> str:
        text = str(reply).strip().strip('"').upper()
        if text not in allowed:
            raise InstrumentError(
                f"malformed {what} from the instrument: {reply!r} is not one of {sorted(allowed)}"
            )
        return text

    return process


def float_reply(what: str) -> Callable[[Any], float]:
    return lambda reply: parse_float(reply, what)


def int_reply(what: str) -> Callable[[Any], int]:
    return lambda reply: parse_int(reply, what)


def bool_reply(what: str) -> Callable[[Any], bool]:
    return lambda reply: parse_bool(reply, what)


#: ``Instrument.control(..., **RAW_REPLY, get_process=float_reply("x"))``: hand the whole reply
#: string to ``get_process`` (no splitting, no silent cast), so it can be validated.
RAW_REPLY = {"cast": str, "maxsplit": 0}


def choice_control(
    get_command: str, set_command: str, docs: str, choices: Sequence[str], what: str
) -> property:
    """``Instrument.control`` for a setting with a fixed set of ``choices``: a value is checked
    before it is sent and the reply when it comes back (named ``what`` in errors)."""
    from pymeasure.instruments import Instrument
    from pymeasure.instruments.validators import strict_discrete_set

    return Instrument.control(
        get_command,
        set_command,
        docs,
        validator=strict_discrete_set,
        values=list(choices),
        get_process=parse_choice(choices, what),
        **RAW_REPLY,
    )


def flag_control(get_command: str, set_command: str, docs: str, what: str) -> property:
    """``Instrument.control`` for an on/off setting: sent as 1/0, a reply other than 0/1 is an
    InstrumentError naming ``what``."""
    from pymeasure.instruments import Instrument
    from pymeasure.instruments.validators import strict_discrete_set

    return Instrument.control(
        get_command,
        set_command,
        docs,
        validator=strict_discrete_set,
        values=[True, False],
        set_process=int,
        get_process=bool_reply(what),
        **RAW_REPLY,
    )


def range_control(
    get_command: str, set_command: str, docs: str, limits: Sequence[float], what: str, kind: type = float
) -> property:
    """``Instrument.control`` for a number within ``limits`` (``kind`` float or int): a value is
    checked before it is sent, a reply that is not such a number is an InstrumentError naming
    ``what``."""
    from pymeasure.instruments import Instrument
    from pymeasure.instruments.validators import strict_range

    integer = kind is int
    return Instrument.control(
        get_command,
        set_command,
        docs,
        validator=strict_range,
        values=list(limits),
        get_process=int_reply(what) if integer else float_reply(what),
        **({"set_process": int} if integer else {}),
        **RAW_REPLY,
    )


# --- error queue -------------------------------------------------------------------------------
def parse_error(reply: str) -> tuple[int, str]:
    """``'-113,"Undefined header"'`` -> ``(-113, "Undefined header")``."""
    match = _ERROR_RE.match(reply or "")
    if not match:
        raise InstrumentError(f"malformed SYST:ERR? reply from the instrument: {reply!r}")
    return int(match.group(1)), match.group(2)


def drain_errors(
    ask: Callable[[str], str], query: str = "SYST:ERR?", limit: int = MAX_QUEUED_ERRORS
) -> list[tuple[int, str]]:
    """Read the error queue until ``+0,"No error"``; return the errors in order."""
    errors: list[tuple[int, str]] = []
    for _ in range(limit):
        code, message = parse_error(ask(query).strip())
        if code == 0:
            return errors
        errors.append((code, message))
    raise InstrumentError(
        f"error queue did not empty after {limit} reads (last: {errors[-1]}); the instrument keeps "
        "reporting errors - check its state and connection"
    )


def format_errors(errors: Sequence[tuple[int, str]]) -> str:
    return "; ".join(f'{code:+d},"{message}"' for code, message in errors)


class ConfirmedShutdown:
    """``shutdown()`` that reads the output back after switching it off: the query waits until
    the instrument has acted on everything written before it (a socket closed straight after a
    write may leave the last commands unread), and an output that still reports on raises
    instead of being assumed off. List it first among a driver's bases; the driver needs
    ``output_state()``."""

    def shutdown(self) -> None:
        super().shutdown()  # type: ignore[misc]
        if self.output_state().on:  # type: ignore[attr-defined]
            name = self.name  # type: ignore[attr-defined]
            raise InstrumentError(f"{name} output still reports ON after shutdown; switch it off by hand")


class ErrorQueueMixin:
    """``check_errors``/``raise_errors`` for a pymeasure instrument whose error queue is read
    with ``ERROR_QUERY``, and ``check_in_step``; list it before ``SCPIMixin`` so these take
    precedence."""

    ERROR_QUERY = "SYST:ERR?"

    def check_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue; return ``[(code, message), ...]`` (logged, not raised)."""
        errors = drain_errors(self.ask, self.ERROR_QUERY)
        driver_log = logging.getLogger(type(self).__module__)
        for code, message in errors:
            driver_log.error("%s: %+d, %s", self.name, code, message)
        return errors

    def clear_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue quietly and return what it held (the caller says why it was there)."""
        return drain_errors(self.ask, self.ERROR_QUERY)

    def raise_errors(self, context: str) -> None:
        """Drain the error queue and raise InstrumentError if it held anything."""
        errors = self.check_errors()
        if errors:
            raise InstrumentError(f"{self.name} reported error(s) after {context}: {format_errors(errors)}")

    def check_in_step(self, context: str) -> None:
        """``*OPC?`` must answer exactly ``1``. After a binary block this proves nothing was left
        behind: a block whose bytes slipped leaves bytes that would be read as the next reply."""
        reply = self.ask("*OPC?")
        if reply.strip() != "1":
            raise InstrumentError(
                f"{self.name} sent {reply[:40]!r} where *OPC? should answer 1 after "
                f"{context}: the reply stream is out of step (damaged transfer)"
            )
