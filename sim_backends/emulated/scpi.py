"""SCPI message parsing and the instrument core every emulator builds on.

Real instruments receive byte streams: program messages end with a newline, several commands
share one message separated by ``;`` (a command without a leading ``:`` continues the previous
command's header path), headers have long and short forms in any case, parameters may be quoted
strings or IEEE 488.2 definite-length binary blocks that can contain newlines. The core here
implements exactly that, plus the IEEE 488.2 / SCPI status model the drivers rely on: an error
queue (``SYST:ERR?``), the output queue (``-410 Query INTERRUPTED`` when a new message arrives
before the previous reply was read, ``-420 Query UNTERMINATED`` when reading with nothing
queued), ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``*ESR?``, ``*STB?``, ``*WAI``.

Every client connection is a :class:`Session` with its own input buffer and output queue, so a
client that holds back half a command never blocks another one, its bytes are never glued onto
another client's, and nobody reads a reply meant for someone else. Input is capped
(``max_text_bytes`` of commands, ``max_block_bytes`` per binary block): beyond, the message is
thrown away as it arrives (memory stays bounded) and ``-223 Too much data`` is queued. Output is
capped too: past ``max_commands`` commands, or once its replies pass ``max_reply_bytes``, the rest
of a message is discarded with the same error (``:WAV:DATA?;`` twenty thousand times in one line
gets at most a megabyte of answers).

Malformed input never raises out of :meth:`ScpiInstrument.write`: it queues the SCPI error an
instrument would report, so a client sees it through ``SYST:ERR?`` and the session goes on.
Faults injected for tests (:mod:`.faults`) act here, on messages, replies and blocks.
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from spinlab.sim_backends.emulated.faults import (FaultInjector, damage_received_block, damage_sent_block,
                                                  nan_reply)

#: Standard SCPI error messages (SCPI-99 vol. 2, ch. 21) used by the emulators.
ERROR_MESSAGES = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -151: "Invalid string data",
    -160: "Block data error",
    -161: "Invalid block data",
    -200: "Execution error",
    -211: "Trigger ignored",
    -213: "Init ignored",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -310: "System error",
    -350: "Queue overflow",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
}

_FLOAT_RE = re.compile(rb"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MNEMONIC_RE = re.compile(r"^([A-Za-z][A-Za-z_]*?)(\d*)$")


class ScpiError(Exception):
    """Raised inside a command handler; the core turns it into an error-queue entry."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = int(code)
        self.detail = detail
        super().__init__(f"{code}: {detail}")

    def entry(self) -> str:
        message = ERROR_MESSAGES.get(self.code, "Device-specific error")
        if self.detail:
            message = f"{message}; {self.detail}"
        return f'{self.code:+d},"{message.replace(chr(34), chr(39))}"'


# --- parameters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """One parameter of a command as it arrived: raw text, or the payload of a binary block."""

    raw: bytes
    block: bool = False

    @property
    def text(self) -> str:
        if self.block:
            raise ScpiError(-104, "binary block where text was expected")
        return self.raw.decode("ascii", errors="replace").strip()


def arg_float(arg: Arg, special: dict[str, float] | None = None) -> float:
    """A decimal numeric parameter (``MIN``/``MAX``/``DEF`` via ``special``)."""
    text = arg.text
    if special:
        for name, value in special.items():
            if _keyword_matches(text, name):
                return value
    if not _FLOAT_RE.match(text.encode()):
        if text.upper() in ("INF", "+INF", "9.9E37", "9.9E+37"):
            return float("inf")
        raise ScpiError(-104, f"expected a number, got {text!r}")
    return float(text)


def arg_int(arg: Arg, special: dict[str, float] | None = None) -> int:
    value = arg_float(arg, special)
    if not math.isfinite(value):
        raise ScpiError(-222, f"expected an integer, got {arg.text!r}")
    if value != int(value):
        raise ScpiError(-104, f"expected an integer, got {arg.text!r}")
    return int(value)


def arg_bool(arg: Arg) -> bool:
    text = arg.text.upper()
    if text in ("ON", "1", "+1"):
        return True
    if text in ("OFF", "0", "+0"):
        return False
    raise ScpiError(-104, f"expected ON/OFF/1/0, got {arg.text!r}")


def arg_choice(arg: Arg, choices: Iterable[str]) -> str:
    """Character data matched against long/short forms such as ``"NORMal"``; returns the short
    upper-case form (``"NORM"``)."""
    text = arg.text
    for choice in choices:
        if _keyword_matches(text, choice):
            return _short_form(choice)
    raise ScpiError(-224, f"{text!r} is not one of {[_short_form(c) for c in choices]}")


def arg_string(arg: Arg) -> str:
    text = arg.text
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _short_form(keyword: str) -> str:
    short = "".join(ch for ch in keyword if ch.isupper() or ch.isdigit() or ch == "*")
    return short or keyword.upper()


def _keyword_matches(text: str, keyword: str) -> bool:
    upper = text.upper()
    return upper == keyword.upper() or upper == _short_form(keyword)


def format_float(value: float) -> str:
    """Numbers the way Keysight instruments print them: ``+1.00000000000000E+06``."""
    if value == float("inf"):
        return "+9.9E+37"
    return f"{value:+.14E}"


# --- headers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    optional: bool
    suffix: str  # "" none, "opt1" optional suffix that must be 1, "n" captured number, "=3" fixed


_TOKEN_RE = re.compile(r"(\[)?:?(\*?[A-Za-z]+)(\[1\]|<n>|\d+)?(\])?")


def _compile(pattern: str) -> tuple[_Node, ...]:
    """``"[SOURce[1]]:FUNCtion:ARBitrary:SRATe"`` / ``"CHANnel<n>:SCALe"`` -> nodes.

    ``[X]`` is an optional node, ``X[1]`` a numeric suffix that may be omitted or 1, ``X<n>`` a
    numeric suffix passed to the handler (1 when omitted)."""
    nodes = []
    for match in _TOKEN_RE.finditer(pattern):
        open_, body, suffix, close = match.groups()
        if bool(open_) != bool(close):
            raise ValueError(f"unbalanced [] in SCPI pattern {pattern!r}")
        kind = {"[1]": "opt1", "<n>": "n"}.get(suffix or "", f"={suffix}" if suffix else "")
        nodes.append(_Node(_short_form(body), body.upper(), bool(open_), kind))
    return tuple(nodes)


def _match(nodes: Sequence[_Node], parts: Sequence[tuple[str, str]]) -> tuple[int, ...] | None:
    """Match header mnemonics ``[(alpha, digits), ...]`` against nodes; return captured
    numeric suffixes or None."""
    if not nodes:
        return () if not parts else None
    node, rest = nodes[0], nodes[1:]
    if parts:
        alpha, digits = parts[0]
        if alpha in (node.short, node.long):
            suffixes: tuple[int, ...] | None = None
            if node.suffix == "n":
                suffixes = (int(digits) if digits else 1,)
            elif node.suffix.startswith("="):
                suffixes = () if digits == node.suffix[1:] else None
            elif digits in ("", "1") if node.suffix == "opt1" else digits == "":
                suffixes = ()
            if suffixes is not None:
                tail = _match(rest, parts[1:])
                if tail is not None:
                    return suffixes + tail
    if node.optional:
        tail = _match(rest, parts)
        if tail is not None:
            return ((1,) if node.suffix == "n" else ()) + tail
    return None


Handler = Callable[..., "str | bytes | None"]


# --- message splitting -----------------------------------------------------------------------
class _Oversize(Exception):
    """A block header declares more bytes than the instrument accepts."""

    def __init__(self, payload_start: int, length: int) -> None:
        super().__init__(length)
        self.payload_start = payload_start
        self.length = length


class _Next:
    """The next position of ``char`` at or after ``i`` in ``buf[:end]``, searched again only once
    passed: a scan over a message of many small pieces stays linear in its length."""

    def __init__(self, buf: bytes | bytearray, char: bytes, end: int) -> None:
        self.buf, self.char, self.end, self.at = buf, char, end, -2  # -2: not searched, -1: none left

    def __call__(self, i: int) -> int:
        if self.at != -1 and self.at < i:
            self.at = self.buf.find(self.char, i, self.end)
        return self.at


def _scan_message(buf: bytes | bytearray, start: int,
                  max_block: int | None = None) -> tuple[int, list[tuple[int, int, int]]] | None:
    """Find the end of the program message starting at ``start``.

    Returns ``(end, blocks)`` where ``end`` is the index of the terminating newline and
    ``blocks`` the ``(hash, start, stop)`` positions of binary blocks inside the message, or None
    when the message is not complete yet (a block or the newline has not arrived). A block
    declaring more than ``max_block`` bytes raises :class:`_Oversize` as soon as its header is in.
    """
    i = start
    n = len(buf)
    blocks: list[tuple[int, int, int]] = []
    next_nl, next_hash, next_quote = _Next(buf, b"\n", n), _Next(buf, b"#", n), _Next(buf, b'"', n)
    while True:
        nl, hash_, quote = next_nl(i), next_hash(i), next_quote(i)
        specials = [p for p in (nl, hash_, quote) if p >= 0]
        if not specials:
            return None
        p = min(specials)
        if p == nl:
            return nl, blocks
        if p == quote:
            close = buf.find(b'"', p + 1)
            if nl >= 0 and not 0 <= close < nl:
                # an unterminated string: the newline ends the message anyway (decided by the
                # bytes alone, never by whether a later quote has arrived yet)
                return nl, blocks
            if close < 0:
                return None
            i = close + 1
            continue
        # '#': a definite-length block header '#<d><d digits of length>' or '#0' indefinite
        if p + 1 >= n:
            return None
        d = buf[p + 1] - 48
        if d == 0:
            # indefinite-length block: runs to the newline that ends the message
            if nl < 0:
                return None
            blocks.append((p, p + 2, nl))
            return nl, blocks
        if not 1 <= d <= 9:
            i = p + 1
            continue
        if p + 2 + d > n:
            return None
        digits = bytes(buf[p + 2 : p + 2 + d])
        if not digits.isdigit():
            i = p + 1  # not a block header; let the command parser complain
            continue
        length = int(digits)
        payload_start = p + 2 + d
        if max_block is not None and length > max_block:
            raise _Oversize(payload_start, length)
        if payload_start + length > n:
            return None
        blocks.append((p, payload_start, payload_start + length))
        i = payload_start + length


class Session:
    """One client connection: its own input buffer and output queue.

    IEEE 488.2 gives an instrument one input buffer and one output queue; with several
    connections (TCP clients, VISA sessions) each gets its own, as LAN instruments do, so
    clients cannot interleave half messages or steal each other's replies. Create with
    :meth:`ScpiInstrument.open_session`; every method takes the instrument lock.
    """

    def __init__(self, instrument: "ScpiInstrument") -> None:
        self.instrument = instrument
        self.input = bytearray()
        self.output = bytearray()
        #: a delayed reply (fault) is not handed out before this monotonic time
        self.ready_at = 0.0
        #: False once the connection dropped (fault) or was closed
        self.alive = True
        self._discard = 0          # bytes of an over-size block still to throw away
        self._skip_line = False    # throwing away an over-size message up to its newline

    def write(self, data: bytes) -> None:
        """Receive bytes; every complete newline-terminated message is executed."""
        self.instrument.receive(self, data)

    @property
    def ready(self) -> bool:
        return bool(self.output) and time.monotonic() >= self.ready_at

    def read(self, max_bytes: int | None = None, stop_at: bytes | None = None) -> bytes:
        """Take up to ``max_bytes`` of the queued reply (all of it when None), ending early
        after the first ``stop_at`` byte when given (a VISA termination character)."""
        with self.instrument.lock:
            if not self.ready:
                return b""
            count = len(self.output) if max_bytes is None else min(max_bytes, len(self.output))
            if stop_at is not None:
                cut = self.output.find(stop_at, 0, count)
                if cut >= 0:
                    count = cut + 1
            chunk = bytes(self.output[:count])
            del self.output[:count]
            return chunk

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a reply can be read (another thread may complete an acquisition)."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self.instrument.lock:
            while self.alive:
                now = time.monotonic()
                if self.output and now >= self.ready_at:
                    return True
                if now >= deadline:
                    return False
                wait = deadline - now
                if self.output:
                    wait = min(wait, self.ready_at - now)
                self.instrument._output_ready.wait(wait)
            return False

    def clear(self) -> None:
        """Selected Device Clear: drop pending input and output (instrument state is kept)."""
        with self.instrument.lock:
            self.input.clear()
            self.output.clear()
            self.ready_at = 0.0
            self._discard, self._skip_line = 0, False

    def close(self) -> None:
        """The client is gone: forget its partial input and pending replies."""
        with self.instrument.lock:
            self.clear()
            self.alive = False
            self.instrument._output_ready.notify_all()


class ScpiInstrument:
    """Base of the emulated instruments: byte-level I/O, dispatch, status and error queues.

    Subclasses register commands with :meth:`command` / :meth:`query` in ``_register`` and
    implement ``_reset`` (state after ``*RST``). Thread safe: every public entry point holds the
    instrument lock, so TCP server threads and the lab wiring can call in concurrently.
    :meth:`write`, :meth:`read` and :meth:`ask` use a built-in session (the front panel, for tests
    and the lab); clients open their own with :meth:`open_session`.
    """

    IDN = "spinlab,Emulated SCPI instrument,0,1.0"
    #: Depth of the SCPI error queue (33500B and InfiniiVision: 20 / 30 entries).
    ERROR_QUEUE_DEPTH = 20
    #: Longest command text of one message, and longest binary block, this instrument accepts.
    max_text_bytes = 1 << 20
    max_block_bytes = 1 << 20
    #: Reply bytes one message may queue: past them the rest of the message is discarded with
    #: ``-223 Too much data`` (the query that crosses the line is answered, so one full record fits).
    max_reply_bytes = 1 << 20
    #: Commands (``;``-separated units) one message may hold; the rest is discarded the same way.
    max_commands = 1024

    def __init__(self, lock: threading.RLock | None = None) -> None:
        #: One lock per lab: the wiring calls across instruments, so they share it.
        self.lock = lock if lock is not None else threading.RLock()
        self._output_ready = threading.Condition(self.lock)
        self._commands: list[tuple[tuple[_Node, ...], Handler]] = []
        self._queries: list[tuple[tuple[_Node, ...], Handler]] = []
        self._cache: dict[tuple[bool, tuple[tuple[str, str], ...]], tuple[Handler, tuple[int, ...]] | None] = {}
        self._errors: deque[str] = deque()
        self._esr = 0
        #: injected faults (set by the lab); None: a well-behaved instrument
        self.faults: FaultInjector | None = None
        self._front = Session(self)
        self._current = self._front  # the session whose message is executing
        self._register_common()
        self._register()
        self.reset()

    # --- registration ----------------------------------------------------------------------
    def command(self, pattern: str, handler: Handler) -> None:
        """Register a setting command: ``handler(args, *suffixes)``."""
        self._commands.append((_compile(pattern), handler))

    def query(self, pattern: str, handler: Handler) -> None:
        """Register a query (pattern without ``?``): ``handler(args, *suffixes) -> reply``."""
        self._queries.append((_compile(pattern), handler))

    def _register(self) -> None:
        """Subclasses register their command tree here."""

    def _reset(self) -> None:
        """Subclasses restore their ``*RST`` state here."""

    # --- byte I/O (what a VISA session or a socket sees) -----------------------------------
    def open_session(self) -> Session:
        return Session(self)

    def write(self, data: bytes) -> None:
        """Receive bytes on the front-panel session."""
        self._front.write(data)

    def read(self, max_bytes: int | None = None, stop_at: bytes | None = None) -> bytes:
        """Take queued reply bytes of the front-panel session (see :meth:`Session.read`)."""
        return self._front.read(max_bytes, stop_at)

    @property
    def output_pending(self) -> int:
        """Bytes of reply waiting on the front-panel session."""
        return len(self._front.output)

    def note_unterminated_read(self) -> None:
        """A client tried to read with nothing queued (IEEE 488.2 ``-420``)."""
        with self.lock:
            self.push_error(ScpiError(-420, "read with no query pending"))

    def device_clear(self) -> None:
        """Selected Device Clear on the front-panel session."""
        self._front.clear()

    def ask(self, message: str) -> str:
        """Convenience for tests and the lab: write one message, return the ASCII reply."""
        with self.lock:
            self.write(message.encode() + b"\n")
            return self.read().decode("ascii", errors="replace").rstrip("\n")

    def receive(self, session: Session, data: bytes) -> None:
        """Bytes from ``session``'s client: buffer them (within the caps) and execute every
        complete message."""
        with self.lock:
            if not session.alive:
                return
            pos = 0
            if session._discard:
                pos = min(session._discard, len(data))
                session._discard -= pos
                if session._discard:
                    return
                session._skip_line = True
            if session._skip_line:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    return
                pos, session._skip_line = newline + 1, False
            session.input += data[pos:] if pos else data
            self._process(session)

    def _process(self, session: Session) -> None:
        buf = session.input
        start = 0
        while session.alive and start < len(buf):
            try:
                found = _scan_message(buf, start, self.max_block_bytes)
            except _Oversize as big:
                self.push_error(ScpiError(-223, f"block of {big.length} bytes exceeds the "
                                                f"{self.max_block_bytes}-byte limit; message discarded"))
                stop = big.payload_start + big.length
                newline = buf.find(b"\n", stop) if stop <= len(buf) else -1
                if newline >= 0:
                    start = newline + 1
                    continue
                session._discard = max(stop - len(buf), 0)
                session._skip_line = not session._discard
                start = len(buf)
                break
            if found is None:
                if len(buf) - start > self.max_text_bytes + self.max_block_bytes:
                    self.push_error(ScpiError(-223, f"message longer than the {self.max_text_bytes}-byte "
                                                    "input buffer; discarded up to its newline"))
                    session._skip_line = True
                    start = len(buf)
                break
            end, blocks = found
            self._execute_message(session, buf, start, end, blocks)
            start = end + 1
        if start:
            del buf[:start]

    # --- status ----------------------------------------------------------------------------
    def push_error(self, error: ScpiError) -> None:
        if len(self._errors) >= self.ERROR_QUEUE_DEPTH:
            self._errors[-1] = ScpiError(-350).entry()
            return
        self._errors.append(error.entry())
        # standard event status register: command / execution / device / query error bits
        code = error.code
        if -199 <= code <= -100:
            self._esr |= 0x20
        elif -299 <= code <= -200:
            self._esr |= 0x10
        elif -499 <= code <= -400:
            self._esr |= 0x04
        else:
            self._esr |= 0x08

    @property
    def error_count(self) -> int:
        return len(self._errors)

    def errors(self) -> list[str]:
        """Pending error-queue entries (not removed); for tests and the lab."""
        with self.lock:
            return list(self._errors)

    def reset(self) -> None:
        with self.lock:
            self._reset()

    # --- execution -------------------------------------------------------------------------
    def _execute_message(self, session: Session, buf: bytearray, start: int, end: int,
                         blocks: list[tuple[int, int, int]]) -> None:
        self._current = session
        if session.output:
            # a new message before the previous reply was read: IEEE 488.2 discards the reply
            session.output.clear()
            self.push_error(ScpiError(-410, "new command before the previous reply was read"))
        if self.faults is not None and not self._message_faults(session, buf, blocks):
            return
        replies: list[bytes] = []
        path: list[str] = []
        queued = 0
        units = _split_units(buf, start, end, blocks, self.max_commands + 1)
        for count, (unit_start, unit_end, unit_blocks) in enumerate(units):
            too_much = (f"replies of one message passed {self.max_reply_bytes} bytes"
                        if queued > self.max_reply_bytes else
                        f"more than {self.max_commands} commands in one message" if count == self.max_commands
                        else None)
            if too_much:
                self.push_error(ScpiError(-223, f"{too_much}; the rest of the message was discarded"))
                break
            try:
                reply, path = self._execute_unit(buf, unit_start, unit_end, unit_blocks, path)
            except ScpiError as err:
                self.push_error(err)
                continue
            except Exception as exc:  # noqa: BLE001 - an emulator must never crash its client
                self.push_error(ScpiError(-200, f"{type(exc).__name__}: {exc}"))
                continue
            if reply is not None:
                replies.append(reply if isinstance(reply, bytes) else reply.encode())
                queued += len(replies[-1]) + 1
        if replies:
            self.deliver(session, b";".join(replies) + b"\n")

    def _message_faults(self, session: Session, buf: bytearray, blocks: list[tuple[int, int, int]]) -> bool:
        """Injected faults on an arriving message; False when it is lost."""
        hit = self.faults.fire("message")
        if hit is not None:
            kind = hit[0].kind
            if kind == "drop":
                session.close()
                return False
            if kind == "reset":
                self._reset()
            elif kind == "error":
                self.push_error(ScpiError(-310, "injected fault"))
        for _, payload_start, payload_end in blocks:
            hit = self.faults.fire("block_in")
            if hit is not None:
                damage_received_block(buf, payload_start, payload_end, hit[1])
        return True

    def defer_reply(self) -> Session:
        """The session of the executing query, to answer it later with :meth:`deliver`."""
        return self._current

    def deliver(self, session: Session, data: bytes) -> None:
        """Queue a complete reply (with terminator) for ``session`` and wake its reader."""
        with self.lock:
            if not session.alive:
                return
            if self.faults is not None:
                hit = self.faults.fire("reply")
                if hit is not None:
                    if hit[0].kind == "silent":
                        return
                    session.ready_at = time.monotonic() + hit[0].s
                if data[:1] == b"#":
                    hit = self.faults.fire("block_out")
                    if hit is not None:
                        data = damage_sent_block(hit[0].kind, data, hit[1])
                else:
                    with_nan = nan_reply(data)
                    if with_nan is not None and self.faults.fire("number") is not None:
                        data = with_nan
            session.output += data
            self._output_ready.notify_all()

    def _execute_unit(self, buf: bytearray, start: int, end: int, blocks: list[tuple[int, int, int]],
                      path: list[str]) -> tuple[str | bytes | None, list[str]]:
        # header: up to the first whitespace
        i = start
        while i < end and buf[i] in b" \t\r":
            i += 1
        j = i
        while j < end and buf[j] not in b" \t\r":
            j += 1
        if i == j:
            if any(c not in b" \t\r" for c in buf[start:end]):
                raise ScpiError(-102, "empty header")
            return None, path  # empty unit, e.g. a trailing ';'
        try:
            header = bytes(buf[i:j]).decode("ascii")
        except UnicodeDecodeError:
            raise ScpiError(-101, "non-ASCII character in header") from None
        args = _split_args(buf, j, end, blocks)
        is_query = header.endswith("?")
        if is_query:
            header = header[:-1]
        if header.startswith("*"):
            handler, suffixes = self._lookup(is_query, [(header.upper(), "")], header)
            new_path = path
        else:
            absolute = header.startswith(":")
            names = header.lstrip(":").split(":")
            if not names or any(not m for m in names):
                raise ScpiError(-102, f"malformed header {header!r}")
            full = names if absolute or not path else path + names
            parts = []
            for m in full:
                match = _MNEMONIC_RE.match(m)
                if not match:
                    raise ScpiError(-113, f"{header!r}")
                if len(match.group(2)) > 9:
                    raise ScpiError(-114, f"{header!r}")
                parts.append((match.group(1).upper(), match.group(2)))
            handler, suffixes = self._lookup(is_query, parts, header)
            new_path = full[:-1]
        if is_query:
            return handler(args, *suffixes), new_path
        handler(args, *suffixes)
        return None, new_path

    def _lookup(self, is_query: bool, parts: list[tuple[str, str]], header: str) -> tuple[Handler, tuple[int, ...]]:
        key = (is_query, tuple(parts))
        if key not in self._cache:
            found = None
            for nodes, handler in (self._queries if is_query else self._commands):
                suffixes = _match(nodes, parts)
                if suffixes is not None:
                    found = (handler, suffixes)
                    break
            self._cache[key] = found
        found = self._cache[key]
        if found is None:
            raise ScpiError(-113, f"{header}{'?' if is_query else ''}")
        return found

    # --- common commands -------------------------------------------------------------------
    def _register_common(self) -> None:
        self.query("*IDN", lambda a: self._no_args(a) or self.IDN)
        self.command("*RST", lambda a: self._no_args(a) or self._reset())
        self.command("*CLS", lambda a: self._no_args(a) or self._clear_status())
        self.query("*OPC", lambda a: self._no_args(a) or self.opc_reply())
        self.command("*OPC", lambda a: self._no_args(a) or self._set_esr(0x01))
        self.command("*WAI", lambda a: self._no_args(a))
        self.query("*ESR", lambda a: self._no_args(a) or str(self._take_esr()))
        self.query("*STB", lambda a: self._no_args(a) or str(self.status_byte()))
        self.command("*TRG", lambda a: self._no_args(a) or self.bus_trigger())
        self.query("*OPT", lambda a: self._no_args(a) or self.options())
        self.query("SYSTem:ERRor[:NEXT]", lambda a: self._no_args(a) or self._next_error())
        self.query("SYSTem:ERRor:COUNt", lambda a: self._no_args(a) or str(len(self._errors)))

    def bus_trigger(self) -> None:
        """``*TRG``; instruments that accept it override this."""
        raise ScpiError(-211, "this instrument has no bus trigger")

    def options(self) -> str:
        return "0"

    def opc_reply(self) -> str | None:
        """``*OPC?``: "1" once pending operations are done; None defers the reply."""
        return "1"

    def status_byte(self, session: Session | None = None) -> int:
        stb = 0
        if self._errors:
            stb |= 0x04  # error/event queue not empty
        if (session or self._current).output:
            stb |= 0x10  # message available
        if self._esr:
            stb |= 0x20
        return stb

    def _set_esr(self, bits: int) -> None:
        self._esr |= bits

    def _take_esr(self) -> int:
        value, self._esr = self._esr, 0
        return value

    def _clear_status(self) -> None:
        self._errors.clear()
        self._esr = 0

    def _next_error(self) -> str:
        if self._errors:
            return self._errors.popleft()
        return '+0,"No error"'

    @staticmethod
    def _no_args(args: Sequence[Arg]) -> None:
        if args:
            raise ScpiError(-108, "this command takes no parameters")

    @staticmethod
    def _one(args: Sequence[Arg]) -> Arg:
        if not args:
            raise ScpiError(-109)
        if len(args) > 1:
            raise ScpiError(-108, f"expected one parameter, got {len(args)}")
        return args[0]


def _split_units(buf: bytearray, start: int, end: int, blocks: list[tuple[int, int, int]],
                 limit: int | None = None):
    """Split a message at ``;`` outside strings and blocks: ``(start, end, blocks)`` units, at
    most ``limit`` of them. One pass over the (sorted) blocks: many tiny blocks stay linear."""
    units = []
    unit_start = i = start
    taken = next_block = 0  # blocks handed to earlier units; the next block not yet skipped
    next_semi, next_quote = _Next(buf, b";", end), _Next(buf, b'"', end)
    while True:
        semi, quote = next_semi(i), next_quote(i)
        hash_ = blocks[next_block][0] if next_block < len(blocks) else -1
        candidates = [p for p in (semi, quote, hash_) if p >= 0]
        if not candidates:
            break
        p = min(candidates)
        if p == hash_:
            i = blocks[next_block][2]
            next_block += 1
        elif p == quote:
            close = buf.find(b'"', p + 1, end)
            i = end if close < 0 else close + 1
        else:
            first = taken
            while taken < len(blocks) and blocks[taken][0] < p:
                taken += 1
            units.append((unit_start, p, blocks[first:taken]))
            unit_start = i = p + 1
            if limit is not None and len(units) >= limit:
                return units
    units.append((unit_start, end, blocks[taken:]))
    return units


def _split_args(buf: bytearray, start: int, end: int, blocks: list[tuple[int, int, int]]) -> list[Arg]:
    """Comma-separated parameters; a binary block becomes one :class:`Arg` with ``block=True``."""
    if not blocks and buf.find(b'"', start, end) < 0:
        raw = bytes(buf[start:end]).strip()
        if not raw:
            return []
        args = []
        for token in raw.split(b","):
            token = token.strip()
            if not token:
                raise ScpiError(-109, "empty parameter")
            args.append(Arg(token))
        return args
    args = []
    i = token_start = start
    next_block = 0
    block_arg: Arg | None = None
    next_comma, next_quote = _Next(buf, b",", end), _Next(buf, b'"', end)
    while True:
        comma, quote = next_comma(i), next_quote(i)
        hash_ = blocks[next_block][0] if next_block < len(blocks) else -1
        candidates = [p for p in (comma, quote, hash_) if p >= 0]
        if not candidates:
            break
        p = min(candidates)
        if p == hash_:
            if bytes(buf[token_start:p]).strip():
                raise ScpiError(-161, "characters before a binary block")
            _, payload_start, payload_end = blocks[next_block]
            next_block += 1
            block_arg = Arg(bytes(buf[payload_start:payload_end]), block=True)
            i = token_start = payload_end
        elif p == quote:
            close = buf.find(b'"', p + 1, end)
            if close < 0:
                raise ScpiError(-151, "unterminated string")
            i = close + 1
        else:
            args.append(_finish_arg(buf, token_start, p, block_arg))
            block_arg = None
            i = token_start = p + 1
    if block_arg is not None or bytes(buf[token_start:end]).strip() or args:
        args.append(_finish_arg(buf, token_start, end, block_arg))
    return args


def _finish_arg(buf: bytearray, start: int, stop: int, block: Arg | None) -> Arg:
    if block is not None:
        if bytes(buf[start:stop]).strip():
            raise ScpiError(-161, "characters after a binary block")
        return block
    raw = bytes(buf[start:stop]).strip()
    if not raw:
        raise ScpiError(-109, "empty parameter")
    return Arg(raw)


def encode_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block ``#<n><length><payload>``.

    Kept apart from ``instruments.scpi`` on purpose: the emulator stands for the instrument, so
    sharing the driver's block code would let one encoding bug hide itself in both ends."""
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload


def decode_int16_block(arg: Arg, little_endian: bool) -> np.ndarray:
    if not arg.block:
        raise ScpiError(-104, "expected an IEEE 488.2 binary block")
    if len(arg.raw) % 2:
        raise ScpiError(-161, f"block of {len(arg.raw)} bytes is not a whole number of int16 samples")
    return np.frombuffer(arg.raw, dtype="<i2" if little_endian else ">i2").astype(np.int16)
