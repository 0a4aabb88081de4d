"""SCPI message syntax: framing, separators, headers, parameters and binary blocks.

What an instrument's parser knows before it looks at its own state: a program message ends with a
newline that is neither inside a string nor inside an IEEE 488.2 definite-length block; ``;``
separates the commands of a message and ``,`` the parameters of a command, both only outside
strings and blocks; headers have long and short forms in any case and numeric suffixes.

One rule for strings everywhere: a ``"`` opens a string that the next ``"`` closes, and a string
left open runs to the end of the message, so no ``;``, ``,`` or ``#`` after it counts. Finding one
is a ``-151 Invalid string data`` error. The pieces before it stand.

Kept apart from the instrument state (:mod:`.scpi`) so that the grammar can be read, tested and
fuzzed on bytes alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

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
    -131: "Invalid suffix",
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
_BLANK = b" \t\r"

#: A binary block inside a message: positions of its ``#``, first payload byte, and end.
Block = tuple[int, int, int]


class ScpiError(Exception):
    """Raised by the parser or a command handler; the instrument queues it as an error entry."""

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
            return short_form(choice)
    raise ScpiError(-224, f"{text!r} is not one of {[short_form(c) for c in choices]}")


def arg_string(arg: Arg) -> str:
    text = arg.text
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def short_form(keyword: str) -> str:
    """``"NORMal"`` -> ``"NORM"``: the upper-case letters (digits, underscores: Tektronix's
    ``BYT_Nr`` -> ``BYT_N``) of a long-form keyword."""
    short = "".join(ch for ch in keyword if ch.isupper() or ch.isdigit() or ch in "*_")
    return short or keyword.upper()


def _keyword_matches(text: str, keyword: str) -> bool:
    upper = text.upper()
    return upper == keyword.upper() or upper == short_form(keyword)


def format_float(value: float) -> str:
    """Numbers the way Keysight instruments print them: ``+1.00000000000000E+06``."""
    if value == float("inf"):
        return "+9.9E+37"
    return f"{value:+.14E}"


# --- headers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderNode:
    """One level of a command pattern such as ``[SOURce[1]]``."""

    short: str
    long: str
    optional: bool
    suffix: str  # "" none, "opt1" optional suffix that must be 1, "n" captured number, "=3" fixed


_TOKEN_RE = re.compile(r"(\[)?:?(\*?[A-Za-z][A-Za-z_]*)(\[1\]|<n>|\d+)?(\])?")


def compile_pattern(pattern: str) -> tuple[HeaderNode, ...]:
    """``"[SOURce[1]]:FUNCtion:ARBitrary:SRATe"`` / ``"CHANnel<n>:SCALe"`` -> nodes.

    ``[X]`` is an optional node, ``X[1]`` a numeric suffix that may be omitted or 1, ``X<n>`` a
    numeric suffix passed to the handler (1 when omitted)."""
    nodes = []
    for match in _TOKEN_RE.finditer(pattern):
        open_, body, suffix, close = match.groups()
        if bool(open_) != bool(close):
            raise ValueError(f"unbalanced [] in SCPI pattern {pattern!r}")
        kind = {"[1]": "opt1", "<n>": "n"}.get(suffix or "", f"={suffix}" if suffix else "")
        nodes.append(HeaderNode(short_form(body), body.upper(), bool(open_), kind))
    return tuple(nodes)


def match_header(nodes: Sequence[HeaderNode], parts: Sequence[tuple[str, str]]) -> tuple[int, ...] | None:
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
                tail = match_header(rest, parts[1:])
                if tail is not None:
                    return suffixes + tail
    if node.optional:
        tail = match_header(rest, parts)
        if tail is not None:
            return ((1,) if node.suffix == "n" else ()) + tail
    return None


def split_header(buf: bytes | bytearray, start: int, end: int) -> tuple[str, int] | None:
    """The header of the command in ``buf[start:end]`` and where its parameters start; None for
    an empty command (e.g. after a trailing ``;``)."""
    i = start
    while i < end and buf[i] in _BLANK:
        i += 1
    j = i
    while j < end and buf[j] not in _BLANK:
        j += 1
    if i == j:
        if any(c not in _BLANK for c in buf[start:end]):
            raise ScpiError(-102, "empty header")
        return None
    try:
        return bytes(buf[i:j]).decode("ascii"), j
    except UnicodeDecodeError:
        raise ScpiError(-101, "non-ASCII character in header") from None


def mnemonics(names: Sequence[str], header: str) -> list[tuple[str, str]]:
    """``["CHANnel2", "SCAL"]`` -> ``[("CHANNEL", "2"), ("SCAL", "")]``: upper-case alpha part
    and numeric suffix of each level of ``header``."""
    parts = []
    for name in names:
        match = _MNEMONIC_RE.match(name)
        if not match:
            raise ScpiError(-113, f"{header!r}")
        if len(match.group(2)) > 9:
            raise ScpiError(-114, f"{header!r}")
        parts.append((match.group(1).upper(), match.group(2)))
    return parts


# --- framing: where a message ends -----------------------------------------------------------
class Oversize(Exception):
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


def scan_message(
    buf: bytes | bytearray, start: int, max_block: int | None = None
) -> tuple[int, list[Block]] | None:
    """Find the end of the program message starting at ``start``.

    Returns ``(end, blocks)`` where ``end`` is the index of the terminating newline and
    ``blocks`` the ``(hash, start, stop)`` positions of binary blocks inside the message, or None
    when the message is not complete yet (a block or the newline has not arrived). A block
    declaring more than ``max_block`` bytes raises :class:`Oversize` as soon as its header is in.
    """
    i = start
    n = len(buf)
    blocks: list[Block] = []
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
                # a string left open: the newline ends the message anyway (decided by the bytes
                # alone, never by whether a later quote has arrived yet)
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
            raise Oversize(payload_start, length)
        if payload_start + length > n:
            return None
        blocks.append((p, payload_start, payload_start + length))
        i = payload_start + length


# --- separators: commands and parameters -----------------------------------------------------
def split_at(
    buf: bytes | bytearray, start: int, end: int, blocks: Sequence[Block], separator: bytes
) -> Iterator[tuple[int, int, list[Block]]]:
    """The pieces of ``buf[start:end]`` between ``separator`` bytes outside strings and blocks:
    ``(start, stop, blocks inside)``, lazily. One pass over the (sorted) blocks, so a message of
    many tiny blocks stays linear. A string left open yields nothing more and raises
    ``-151`` (it runs to the end: what follows is part of it)."""
    piece_start = i = start
    taken = next_block = 0  # blocks handed to earlier pieces; the next block not yet skipped
    next_sep, next_quote = _Next(buf, separator, end), _Next(buf, b'"', end)
    while True:
        sep, quote = next_sep(i), next_quote(i)
        hash_ = blocks[next_block][0] if next_block < len(blocks) else -1
        candidates = [p for p in (sep, quote, hash_) if p >= 0]
        if not candidates:
            break
        p = min(candidates)
        if p == hash_:
            i = blocks[next_block][2]
            next_block += 1
        elif p == quote:
            close = buf.find(b'"', p + 1, end)
            if close < 0:
                raise ScpiError(-151, "unterminated string")
            i = close + 1
        else:
            first = taken
            while taken < len(blocks) and blocks[taken][0] < p:
                taken += 1
            yield piece_start, p, list(blocks[first:taken])
            piece_start = i = p + 1
    yield piece_start, end, list(blocks[taken:])


def split_units(
    buf: bytes | bytearray, start: int, end: int, blocks: Sequence[Block]
) -> Iterator[tuple[int, int, list[Block]]]:
    """The ``;``-separated commands of the message ``buf[start:end]`` (see :func:`split_at`)."""
    return split_at(buf, start, end, blocks, b";")


def split_params(buf: bytes | bytearray, start: int, end: int, blocks: Sequence[Block]) -> list[Arg]:
    """Comma-separated parameters; a binary block becomes one :class:`Arg` with ``block=True``."""
    if not blocks and buf.find(b'"', start, end) < 0:
        # no string and no block: a plain split finds the same pieces, in C
        raw = bytes(buf[start:end]).strip()
        return [_text_param(token) for token in raw.split(b",")] if raw else []
    args: list[Arg] = []
    for a, b, inside in split_at(buf, start, end, blocks, b","):
        if b == end and not args and not inside and not bytes(buf[a:b]).strip():
            break  # no parameters at all
        args.append(_param(buf, a, b, inside))
    return args


def _text_param(raw: bytes) -> Arg:
    raw = raw.strip()
    if not raw:
        raise ScpiError(-109, "empty parameter")
    return Arg(raw)


def _param(buf: bytes | bytearray, start: int, stop: int, inside: list[Block]) -> Arg:
    """The parameter in ``buf[start:stop]``: its text, or the one binary block in it."""
    if not inside:
        return _text_param(bytes(buf[start:stop]))
    hash_, payload_start, payload_end = inside[0]
    if bytes(buf[start:hash_]).strip():
        raise ScpiError(-161, "characters before a binary block")
    if len(inside) > 1 or bytes(buf[payload_end:stop]).strip():
        raise ScpiError(-161, "characters after a binary block")
    return Arg(bytes(buf[payload_start:payload_end]), block=True)


# --- block data ------------------------------------------------------------------------------
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
