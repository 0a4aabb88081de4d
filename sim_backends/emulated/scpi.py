"""The instrument core every emulator builds on: sessions, command tree, status and error queues.

The message grammar (framing, ``;`` and ``,`` separators, strings, headers, binary blocks) is
:mod:`.scpi_syntax`; this module keeps the state an instrument has: its registered command tree,
the IEEE 488.2 / SCPI status model the drivers rely on (an error queue, ``SYST:ERR?``), the output
queue (``-410 Query INTERRUPTED`` when a new message arrives before the previous reply was read,
``-420 Query UNTERMINATED`` when reading with nothing queued), ``*IDN?``, ``*RST``, ``*CLS``,
``*OPC?``, ``*ESR?``, ``*STB?``, ``*WAI``.

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

The syntax names an emulator needs (:class:`ScpiError`, :class:`Arg`, the ``arg_*`` readers,
:func:`format_float`, the block helpers) are re-exported here for emulators written against
this module.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from spinlab.sim_backends.emulated.faults import (
    FaultInjector,
    damage_received_block,
    damage_sent_block,
    nan_reply,
)
from spinlab.sim_backends.emulated.scpi_syntax import (
    ERROR_MESSAGES,
    Arg,
    Block,
    HeaderNode,
    Oversize,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    arg_int,
    arg_string,
    compile_pattern,
    decode_int16_block,
    encode_block,
    format_float,
    match_header,
    mnemonics,
    scan_message,
    split_header,
    split_params,
    split_units,
)

__all__ = [
    "ERROR_MESSAGES",
    "Arg",
    "Handler",
    "ScpiError",
    "ScpiInstrument",
    "Session",
    "arg_bool",
    "arg_choice",
    "arg_float",
    "arg_int",
    "arg_string",
    "decode_int16_block",
    "encode_block",
    "format_float",
]

Handler = Callable[..., "str | bytes | None"]


class Session:
    """One client connection: its own input buffer and output queue.

    IEEE 488.2 gives an instrument one input buffer and one output queue; with several
    connections (TCP clients, VISA sessions) each gets its own, as LAN instruments do, so
    clients cannot interleave half messages or steal each other's replies. Create with
    :meth:`ScpiInstrument.open_session`; every method takes the instrument lock.
    """

    def __init__(self, instrument: ScpiInstrument) -> None:
        self.instrument = instrument
        self.input = bytearray()
        self.output = bytearray()
        #: a delayed reply (fault) is not handed out before this monotonic time
        self.ready_at = 0.0
        #: False once the connection dropped (fault) or was closed
        self.alive = True
        self._discard = 0  # bytes of an over-size block still to throw away
        self._skip_line = False  # throwing away an over-size message up to its newline

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
        self._opc_waiters: list[Session] = []  # sessions whose *OPC? waits for an operation
        self._commands: list[tuple[tuple[HeaderNode, ...], Handler]] = []
        self._queries: list[tuple[tuple[HeaderNode, ...], Handler]] = []
        self._cache: dict[
            tuple[bool, tuple[tuple[str, str], ...]], tuple[Handler, tuple[int, ...]] | None
        ] = {}
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
        self._commands.append((compile_pattern(pattern), handler))

    def query(self, pattern: str, handler: Handler) -> None:
        """Register a query (pattern without ``?``): ``handler(args, *suffixes) -> reply``."""
        self._queries.append((compile_pattern(pattern), handler))

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
                found = scan_message(buf, start, self.max_block_bytes)
            except Oversize as big:
                self.push_error(
                    ScpiError(
                        -223,
                        f"block of {big.length} bytes exceeds the "
                        f"{self.max_block_bytes}-byte limit; message discarded",
                    )
                )
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
                    self.push_error(
                        ScpiError(
                            -223,
                            f"message longer than the {self.max_text_bytes}-byte "
                            "input buffer; discarded up to its newline",
                        )
                    )
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
    def _execute_message(
        self, session: Session, buf: bytearray, start: int, end: int, blocks: list[Block]
    ) -> None:
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
        try:
            for count, (unit_start, unit_end, unit_blocks) in enumerate(split_units(buf, start, end, blocks)):
                too_much = (
                    f"replies of one message passed {self.max_reply_bytes} bytes"
                    if queued > self.max_reply_bytes
                    else f"more than {self.max_commands} commands in one message"
                    if count == self.max_commands
                    else None
                )
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
        except ScpiError as err:  # a string left open: the rest of the message is part of it
            self.push_error(err)
        if replies:
            self.deliver(session, b";".join(replies) + b"\n")

    def _message_faults(self, session: Session, buf: bytearray, blocks: list[Block]) -> bool:
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

    def _execute_unit(
        self, buf: bytearray, start: int, end: int, blocks: list[Block], path: list[str]
    ) -> tuple[str | bytes | None, list[str]]:
        found = split_header(buf, start, end)
        if found is None:
            return None, path  # empty unit, e.g. a trailing ';'
        header, params_start = found
        args = split_params(buf, params_start, end, blocks)
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
            parts = mnemonics(full, header)
            handler, suffixes = self._lookup(is_query, parts, header)
            new_path = full[:-1]
        if is_query:
            return handler(args, *suffixes), new_path
        handler(args, *suffixes)
        return None, new_path

    def _lookup(
        self, is_query: bool, parts: list[tuple[str, str]], header: str
    ) -> tuple[Handler, tuple[int, ...]]:
        key = (is_query, tuple(parts))
        if key not in self._cache:
            found = None
            for nodes, handler in self._queries if is_query else self._commands:
                suffixes = match_header(nodes, parts)
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

    def operation_pending(self) -> bool:
        """True while an operation that ``*OPC?`` waits for runs (a scope's single acquisition)."""
        return False

    def opc_reply(self) -> str | None:
        """``*OPC?``: "1" once pending operations are done; while one runs the reply is deferred
        until :meth:`_complete_opc` (None)."""
        if self.operation_pending():
            self._opc_waiters.append(self.defer_reply())
            return None
        return "1"

    def _complete_opc(self) -> None:
        """Answer every deferred ``*OPC?``: the operation completed."""
        waiters, self._opc_waiters = self._opc_waiters, []
        for session in waiters:
            self.deliver(session, b"1\n")

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
