"""Faults on demand: the emulated instruments misbehave the way real ones do, reproducibly.

A fault spec is one short string, the same from Python (``EmulatedLab(faults=SPEC)``,
``lab.inject(SPEC)``), from an address (``bench:emulated?faults=SPEC``) and from the command
line (``spinlab emulate --faults SPEC``)::

    SPEC  = FAULT ["," FAULT]...
    FAULT = KIND "@" INSTRUMENT [":" OPTION "=" VALUE]...

    silent@scope:at=40                 the 40th reply of the scope is never sent
    drop@awg:at=3:count=2,nan@source   two dropped AWG connections, one NaN bias reading
    corrupt@scope:p=0.2:count=inf      every scope block is damaged with probability 0.2

INSTRUMENT is ``awg``, ``scope``, ``source``, ``magnet``, ``gaussmeter`` or ``analyser``. Each fault counts
*events* of its kind on its instrument (see ``KINDS``: program messages received, replies,
numeric replies, binary blocks, captures) and fires from the ``at``-th event on (default 1), at
most ``count`` times (default 1; ``inf`` = never stops), each eligible event with probability
``p`` (default 1). Random choices (``p``, which bytes get damaged) come from a generator seeded
by the lab seed and the fault's position in the spec, so a run is reproducible. ``s`` is the
hold time of ``delay`` (default 0.5 s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from spinlab.errors import ConfigError

INSTRUMENTS = (
    "awg",
    "scope",
    "source",
    "magnet",
    "gaussmeter",
    "analyser",
)  # the analyser's traces are blocks too

#: kind -> (event it counts, what happens). Block kinds act on IEEE 488.2 definite-length blocks.
KINDS: dict[str, tuple[str, str]] = {
    "delay": ("reply", "the reply is held back s seconds"),
    "silent": ("reply", "the reply is never sent (the instrument hangs on that query)"),
    "nan": ("number", "the first number of a reply reads +9.91E+37, the SCPI not-a-number"),
    "drop": ("message", "the connection drops; the message that was arriving is lost"),
    "error": ("message", "a -310 'System error' entry appears in the error queue"),
    "reset": ("message", "the instrument falls back to its *RST state before the message runs"),
    "truncate": ("block_out", "a block the instrument sends loses the second half of its payload"),
    "length": ("block_out", "a block the instrument sends is well formed but one sample short"),
    "corrupt": (
        "block",
        "bytes of a block are damaged: a sent block's framing no longer matches "
        "its header; a received block keeps its length but not its content",
    ),
    "overrange": ("capture", "a stretch of the scope record is clipped at the top of the screen"),
}
#: Instruments that send blocks (the scope's waveform data) or receive them (the AWG's arbs).
_SENDS_BLOCKS = {"scope", "analyser"}
_RECEIVES_BLOCKS = {"awg"}
_OPTIONS = ("at", "count", "p", "s")
SYNTAX = "KIND@INSTRUMENT[:at=N][:count=N|inf][:p=P][:s=SECONDS]"

#: SCPI's representation of not-a-number (SCPI-99 vol. 1, 7.2.1.5).
SCPI_NAN = b"+9.91E+37"


@dataclass(frozen=True)
class Fault:
    """One fault of a spec (validated)."""

    kind: str
    instrument: str
    at: int = 1
    count: float = 1
    p: float = 1.0
    s: float = 0.5

    @property
    def event(self) -> str:
        event = KINDS[self.kind][0]
        if event == "block":
            return "block_out" if self.instrument in _SENDS_BLOCKS else "block_in"
        return event

    def __str__(self) -> str:
        text = f"{self.kind}@{self.instrument}"
        defaults = Fault(self.kind, self.instrument)
        for name in _OPTIONS:
            value = getattr(self, name)
            if value != getattr(defaults, name):
                text += f":{name}={'inf' if value == math.inf else value}"
        return text


def parse_faults(spec: str | Iterable[Fault] | None) -> tuple[Fault, ...]:
    """``"silent@scope:at=3,drop@awg"`` -> faults; raises :class:`ConfigError` naming the item."""
    if spec is None:
        return ()
    if not isinstance(spec, str):
        faults = tuple(spec)
        if not all(isinstance(f, Fault) for f in faults):
            raise ConfigError("faults must be a spec string or Fault objects")
        return faults
    return tuple(_parse_one(item.strip()) for item in spec.split(",") if item.strip())


def _parse_one(item: str) -> Fault:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"fault {item!r}: {why}; write {SYNTAX}, kinds: {', '.join(KINDS)}, "
            f"instruments: {', '.join(INSTRUMENTS)}"
        )

    head, *options = item.split(":")
    kind, at_sign, instrument = head.partition("@")
    kind, instrument = kind.strip().lower(), instrument.strip().lower()
    if kind not in KINDS:
        raise bad(f"unknown kind {kind!r}")
    if not at_sign or instrument not in INSTRUMENTS:
        raise bad(f"name the instrument after '@' ({'/'.join(INSTRUMENTS)})")
    event = KINDS[kind][0]
    if event == "block_out" and instrument not in _SENDS_BLOCKS:
        raise bad(f"{kind} acts on blocks an instrument sends, and only the scope sends any")
    if event == "block" and instrument not in _SENDS_BLOCKS | _RECEIVES_BLOCKS:
        raise bad("corrupt acts on binary blocks: the scope's waveforms or the AWG's arbs")
    if event == "capture" and instrument != "scope":
        raise bad("overrange clips a scope record")
    values: dict[str, float] = {}
    for option in options:
        name, eq, text = option.partition("=")
        name = name.strip().lower()
        if name not in _OPTIONS or not eq:
            raise bad(f"unknown option {option!r}")
        if name in values:
            raise bad(f"option {name!r} given twice")
        if name == "s" and kind != "delay":
            raise bad("only delay takes s=SECONDS")
        values[name] = _option_value(name, text.strip(), bad)
    return Fault(kind, instrument, **values)  # type: ignore[arg-type]


def _option_value(name: str, text: str, bad) -> float:
    if name == "count" and text.lower() == "inf":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise bad(f"{name}={text!r} is not a number") from None
    if name in ("at", "count"):
        if not (value.is_integer() and value >= 1):
            raise bad(f"{name} must be a whole number >= 1{' or inf' if name == 'count' else ''}")
        return int(value)
    if name == "p" and not 0 < value <= 1:
        raise bad("p must be a probability in (0, 1]")
    if name == "s" and not (math.isfinite(value) and 0 < value <= 3600):
        raise bad("s must be a delay in seconds, 0 < s <= 3600")
    return value


@dataclass
class _Armed:
    fault: Fault
    rng: np.random.Generator
    events: int = 0
    fired: int = 0


@dataclass
class FaultLog:
    """What fired: ``(fault spec, event number)`` in order (tests and reports read it)."""

    entries: list[tuple[str, int]] = field(default_factory=list)


class FaultInjector:
    """The faults of one instrument and their event counters; called under the instrument lock."""

    def __init__(self, faults: Iterable[tuple[int, Fault]], seed: int, log: FaultLog) -> None:
        self._armed = [_Armed(f, np.random.default_rng([seed, index])) for index, f in faults]
        self.log = log

    def add(self, index: int, fault: Fault, seed: int) -> None:
        self._armed.append(_Armed(fault, np.random.default_rng([seed, index])))

    def fire(self, event: str) -> tuple[Fault, np.random.Generator] | None:
        """Count one ``event``; return the first fault that fires on it (with its generator)."""
        hit = None
        for armed in self._armed:
            if armed.fault.event != event:
                continue
            armed.events += 1
            f = armed.fault
            if (
                hit is None
                and armed.events >= f.at
                and armed.fired < f.count
                and (f.p >= 1 or armed.rng.random() < f.p)
            ):
                armed.fired += 1
                self.log.entries.append((str(f), armed.events))
                hit = (f, armed.rng)
        return hit


# --- what the faults do to bytes --------------------------------------------------------------
_FIELDS = re.compile(rb"([;,])")


def _is_number(text: bytes) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def nan_reply(reply: bytes) -> bytes | None:
    """``reply`` with its first numeric field (``;``/``,`` separated) replaced by the SCPI NaN,
    or None when it holds no number."""
    fields = _FIELDS.split(reply.rstrip(b"\n"))
    for i in range(0, len(fields), 2):
        if _is_number(fields[i]):
            fields[i] = SCPI_NAN
            return b"".join(fields) + b"\n"
    return None


def split_block(reply: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(header, payload, rest)`` of a reply that is one definite-length block, else None."""
    if len(reply) < 2 or reply[:1] != b"#" or not reply[1:2].isdigit() or reply[1:2] == b"0":
        return None
    digits = int(reply[1:2])
    field_ = reply[2 : 2 + digits]
    if len(field_) != digits or not field_.isdigit():
        return None
    start = 2 + digits
    end = start + int(field_)
    return reply[:start], reply[start:end], reply[end:]


def damage_sent_block(kind: str, reply: bytes, rng: np.random.Generator) -> bytes:
    """Apply ``truncate``/``length``/``corrupt`` to a block reply (other replies pass)."""
    parts = split_block(reply)
    if parts is None:
        return reply
    header, payload, rest = parts
    if kind == "truncate":
        return header + payload[: len(payload) // 2]
    if kind == "length":
        short = payload[:-2]
        length = str(len(short)).encode()
        return b"#" + str(len(length)).encode() + length + short + rest
    # corrupt: garbage over some bytes, and a few garbage bytes inserted (a framing slip)
    damaged = np.frombuffer(payload, dtype=np.uint8).copy()
    if damaged.size:
        spots = rng.integers(0, damaged.size, size=min(8, damaged.size))
        damaged[spots] = rng.integers(0, 256, size=spots.size, dtype=np.uint8)
    at = int(rng.integers(0, damaged.size + 1))
    extra = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    return header + damaged[:at].tobytes() + extra + damaged[at:].tobytes() + rest


def damage_received_block(buf: bytearray, start: int, stop: int, rng: np.random.Generator) -> None:
    """``corrupt`` on a block the instrument receives: flip bytes in place, length kept."""
    if stop <= start:
        return
    spots = rng.integers(start, stop, size=min(8, stop - start))
    for spot in spots:
        buf[spot] ^= int(rng.integers(1, 256))


__all__ = [
    "Fault",
    "FaultInjector",
    "FaultLog",
    "KINDS",
    "INSTRUMENTS",
    "SYNTAX",
    "nan_reply",
    "parse_faults",
]
