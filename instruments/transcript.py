"""Recorded dialogues: every byte a bench exchanges with its instruments, written and replayed.

Why at the VISA library: every driver (spinlab's, a lab's, pymeasure's) reaches its instrument
through a pyvisa library, so wrapping the library captures both directions of every driver
without knowing any of them. :class:`RecordingVisaLibrary` wraps the station's library (NI-VISA,
``@py`` or the emulated one) and writes a :class:`Transcript`; :class:`ReplayVisaLibrary` is a
library with no instrument behind it that answers the recorded replies to the recorded
messages, and fails on the first message the recording does not have. So a lab sends the
transcript of its real instrument with a bug report, and a test replays it through the same
drivers (``bench:lab.toml?replay=FILE``).

The file is JSON lines. The first line is the header (``{"transcript": 1, "started": ISO time,
"resources": {resource: role}}``); then one line per exchange: ``t`` (s since the start),
``resource``, ``role``, ``direction`` (``write``, ``read``, ``trigger``, ``stb``, ``clear``,
``open``, ``close``) and the bytes as ``text`` (when they are printable ASCII) or ``base64``;
a read or write that failed has ``error`` (the VISA status code) instead. A read is one whole
reply: the chunks a driver reads up to the END of a message are one line.
"""

from __future__ import annotations

import base64
import datetime
import io
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from pyvisa import attributes, constants, errors, highlevel, rname
from pyvisa.util import LibraryPath

from spinlab.errors import ConfigError, SpinlabError

FORMAT_VERSION = 1
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_library_ids = itertools.count(1)
_MORE = constants.StatusCode.success_max_count_read


class TranscriptMismatch(SpinlabError, RuntimeError):
    """The driver sent what the recorded instrument never received (replay). Not an instrument
    fault, so the bench does not retry it: the driver itself strayed."""


def encode(data: bytes) -> dict[str, str]:
    """``{"text": ...}`` for printable ASCII, else ``{"base64": ...}``."""
    if all(byte in _PRINTABLE for byte in data):
        return {"text": data.decode("ascii")}
    return {"base64": base64.b64encode(data).decode("ascii")}


def decode(line: Mapping[str, Any]) -> bytes:
    if "base64" in line:
        return base64.b64decode(line["base64"])
    return str(line.get("text", "")).encode("ascii")


def _key(resource: str) -> str:
    """One spelling per resource (``TCPIP::host::5025::SOCKET`` and ``TCPIP0::...`` alike)."""
    try:
        return str(rname.parse_resource_name(resource))
    except rname.InvalidResourceName:
        return resource


class Transcript:
    """A transcript file being written (thread-safe; :meth:`close` writes what is pending).
    ``path`` None keeps no file: the conformance kit only counts what a driver wrote
    (``writes``: every message written, in order; with ``keep_replies``, ``replies``: every whole
    reply read, so the kit can check a block's length)."""

    def __init__(self, path: Path | None, roles: Mapping[str, str], keep_replies: bool = False) -> None:
        self.path = path
        self.writes: list[bytes] = []
        self.replies: list[bytes] = []
        self._keep_replies = keep_replies
        self.roles = {_key(resource): role for resource, role in roles.items()}
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._pending: dict[str, dict[str, Any]] = {}  # resource -> a reply still being read
        self._file: IO[str] = io.StringIO() if path is None else path.open("x", encoding="utf-8")
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        header = {"transcript": FORMAT_VERSION, "started": started, "resources": self.roles}
        self._file.write(json.dumps(header) + "\n")

    @classmethod
    def create(cls, folder: str | Path, roles: Mapping[str, str]) -> Transcript:
        """A new transcript file in ``folder`` (made if missing), named by time so they sort."""
        where = Path(folder)
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot record transcripts into {where}: {exc}") from None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for n in itertools.count(1):
            try:
                return cls(where / f"transcript-{stamp}-{n:03d}.jsonl", roles)
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    def event(self, resource: str, direction: str, data: bytes | None = None, **extra: Any) -> None:
        resource = _key(resource)
        with self._lock:
            if direction == "write" and data is not None:
                self.writes.append(data)
            self._flush(resource)
            self._write(self._line(resource, direction, data, extra))

    def read(self, resource: str, data: bytes, more: bool) -> None:
        """A chunk of a reply; ``more``: the reply goes on (the chunks make one line)."""
        resource = _key(resource)
        with self._lock:
            pending = self._pending.get(resource)
            if pending is None:
                pending = self._pending[resource] = self._line(resource, "read", b"", {})
                pending["data"] = b""
            pending["data"] += data
            if not more:
                self._flush(resource)

    def _line(self, resource: str, direction: str, data: bytes | None, extra: dict[str, Any]) -> dict:
        line = {"t": round(time.perf_counter() - self._start, 6), "resource": resource}
        line |= {"role": self.roles.get(resource, ""), "direction": direction, **extra}
        if data is not None:
            line["data"] = data
        return line

    def _flush(self, resource: str) -> None:
        pending = self._pending.pop(resource, None)
        if pending is not None:
            if self._keep_replies:
                self.replies.append(pending["data"])
            self._write(pending)

    def _write(self, line: dict[str, Any]) -> None:
        data = line.pop("data", None)
        if data is not None:
            line |= encode(data)
        if not self._file.closed:
            self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        with self._lock:
            for resource in list(self._pending):
                self._flush(resource)
            self._file.close()


def read_transcript(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the exchanges of a transcript file; a bad file is one line naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header, *rows = (json.loads(line) for line in lines if line.strip())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read transcript {path}: {exc}") from None
    if not isinstance(header, dict) or header.get("transcript") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a spinlab transcript (version {FORMAT_VERSION} header expected)")
    for row in rows:
        row["bytes"] = decode(row)
        row["resource"] = _key(str(row.get("resource", "")))
    return header, rows


def transcript_file(path: str | Path) -> Path:
    """``path`` itself, or the one transcript in the folder ``path``."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise ConfigError(f"no transcript at {path}")
        return path
    found = sorted(path.glob("transcript-*.jsonl"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ConfigError(f"{path} must hold one transcript to replay, holds: {names}; name the file")
    return found[0]


# --- recording -----------------------------------------------------------------------------
#: library members a wrapper keeps for itself (pyvisa's bookkeeping); the rest go to the wrapped one
#: (``ignore_warning`` included: the wrapped library is the one that warns)
_OWN = {
    "get_library_paths",
    "get_debug_info",
    "handle_return_value",
    "get_last_status_in_session",
    "install_visa_handler",
    "uninstall_visa_handler",
    "uninstall_all_visa_handlers",
}


class RecordingVisaLibrary(highlevel.VisaLibraryBase):
    """A pyvisa library passing every call to ``inner`` and writing the bytes to a transcript."""

    inner: highlevel.VisaLibraryBase
    transcript: Transcript

    @classmethod
    def wrap(cls, inner: Any, transcript: Transcript) -> RecordingVisaLibrary:
        """``inner``: a library object or a pyvisa library specification (``"@py"``, ``""``)."""
        if not isinstance(inner, highlevel.VisaLibraryBase):
            inner = highlevel.open_visa_library(inner or "")
        library = cls(LibraryPath(f"spinlab-recording-{next(_library_ids)}", "spinlab"))
        library.inner, library.transcript = inner, transcript
        return library

    @staticmethod
    def get_library_paths() -> tuple[LibraryPath, ...]:
        return (LibraryPath("spinlab-recording", "spinlab"),)

    @staticmethod
    def get_debug_info() -> dict[str, str]:
        return {"backend": "spinlab recording wrapper"}

    def _init(self) -> None:
        self.resources: dict[Any, str] = {}

    def open(self, session: Any, resource_name: str, *args: Any, **kwargs: Any) -> Any:
        handle, status = self.inner.open(session, resource_name, *args, **kwargs)
        self.resources[handle] = resource_name
        self.transcript.event(resource_name, "open")
        return handle, status

    def close(self, session: Any) -> Any:
        resource = self.resources.pop(session, None)
        if resource is not None:
            self.transcript.event(resource, "close")
        return self.inner.close(session)

    def read(self, session: Any, count: int) -> Any:
        resource = self.resources.get(session, "?")
        try:
            data, status = self.inner.read(session, count)
        except errors.VisaIOError as exc:
            self.transcript.event(resource, "read", error=int(exc.error_code))
            raise
        self.transcript.read(resource, bytes(data), more=status == _MORE)
        return data, status

    def write(self, session: Any, data: bytes) -> Any:
        resource = self.resources.get(session, "?")
        try:
            result = self.inner.write(session, data)
        except errors.VisaIOError as exc:
            self.transcript.event(resource, "write", bytes(data), error=int(exc.error_code))
            raise
        self.transcript.event(resource, "write", bytes(data))
        return result

    def assert_trigger(self, session: Any, protocol: Any) -> Any:
        self.transcript.event(self.resources.get(session, "?"), "trigger")
        return self.inner.assert_trigger(session, protocol)

    def read_stb(self, session: Any) -> Any:
        value, status = self.inner.read_stb(session)
        self.transcript.event(self.resources.get(session, "?"), "stb", value=int(value))
        return value, status

    def clear(self, session: Any) -> Any:
        self.transcript.event(self.resources.get(session, "?"), "clear")
        return self.inner.clear(session)


def _delegate(name: str) -> Any:
    def call(self: RecordingVisaLibrary, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    call.__name__ = name
    return call


for _name, _value in list(vars(highlevel.VisaLibraryBase).items()):
    own = _name.startswith("_") or _name in _OWN or _name in vars(RecordingVisaLibrary)
    if callable(_value) and not own:
        setattr(RecordingVisaLibrary, _name, _delegate(_name))


# --- replaying -----------------------------------------------------------------------------
#: the exchanges a replay matches, in order, per resource (the rest is context for a reader)
_MATCHED = {"write", "read", "trigger", "stb"}


class _ReplaySession:
    def __init__(self, resource: str, parsed: rname.ResourceName) -> None:
        self.resource = resource
        self.session_type = (parsed.interface_type_const, parsed.resource_class)
        self.attrs: dict[Any, Any] = {
            constants.ResourceAttribute.resource_name: str(parsed),
            constants.ResourceAttribute.resource_class: parsed.resource_class,
            constants.ResourceAttribute.interface_type: parsed.interface_type_const,
            constants.ResourceAttribute.timeout_value: 2000,
            constants.ResourceAttribute.termchar: ord("\n"),
            constants.ResourceAttribute.termchar_enabled: False,
        }


class ReplayVisaLibrary(highlevel.VisaLibraryBase):
    """A pyvisa library whose instruments are a transcript: each resource answers its recorded
    replies, in order, to its recorded messages; anything else raises :class:`TranscriptMismatch`
    naming the exchange the recording expected."""

    path: Path
    queues: dict[str, deque[dict[str, Any]]]

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayVisaLibrary:
        path = transcript_file(path)
        header, rows = read_transcript(path)
        return cls.from_rows(rows, path, header.get("resources", {}))

    @classmethod
    def from_rows(
        cls, rows: Iterable[dict[str, Any]], path: Path, resources: Mapping[str, str] = {}
    ) -> ReplayVisaLibrary:
        library = cls(LibraryPath(f"spinlab-replay-{next(_library_ids)}", "spinlab"))
        library.path = path
        library.queues = {_key(resource): deque() for resource in resources}
        for row in rows:
            if row.get("direction") in _MATCHED:
                library.queues.setdefault(row["resource"], deque()).append(row)
        return library

    @staticmethod
    def get_library_paths() -> tuple[LibraryPath, ...]:
        return (LibraryPath("spinlab-replay", "spinlab"),)

    @staticmethod
    def get_debug_info() -> dict[str, str]:
        return {"backend": "spinlab transcript replay"}

    def _init(self) -> None:
        self.sessions: dict[int, Any] = {}
        self.unread: dict[str, bytes] = {}  # resource -> rest of the reply being read
        self._ids = itertools.count(2_000_001)

    def remaining(self) -> dict[str, int]:
        """Recorded exchanges not replayed yet, by resource (all replayed: empty)."""
        return {resource: len(queue) for resource, queue in self.queues.items() if queue}

    def _new_session(self, obj: Any) -> int:
        handle = next(self._ids)
        self.sessions[handle] = obj
        return handle

    def open_default_resource_manager(self) -> Any:
        return self._new_session(self), constants.StatusCode.success

    def list_resources(self, session: Any, query: str = "?*::INSTR") -> tuple[str, ...]:
        return tuple(rname.filter(list(self.queues), query))

    def open(self, session: Any, resource_name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            parsed = rname.parse_resource_name(resource_name)
        except rname.InvalidResourceName:
            raise errors.VisaIOError(constants.StatusCode.error_invalid_resource_name) from None
        if str(parsed) not in self.queues:
            raise errors.VisaIOError(constants.StatusCode.error_resource_not_found)
        return self._new_session(_ReplaySession(str(parsed), parsed)), constants.StatusCode.success

    def close(self, session: Any) -> Any:
        sess = self.sessions.pop(session, None)
        if isinstance(sess, _ReplaySession):
            self.unread.pop(sess.resource, None)  # a new connection starts clean
        return constants.StatusCode.success

    def _session(self, session: Any) -> _ReplaySession:
        sess = self.sessions.get(session)
        if not isinstance(sess, _ReplaySession):
            raise errors.VisaIOError(constants.StatusCode.error_invalid_object)
        return sess

    def _next(self, resource: str, direction: str, sent: bytes | None = None) -> dict[str, Any]:
        queue = self.queues[resource]
        what = direction if sent is None else f"{direction} {sent[:80]!r}"
        if not queue:
            raise TranscriptMismatch(
                f"replay of {self.path.name}: {resource} got {what} after the recording ended"
            )
        row = queue[0]
        if row["direction"] != direction or (sent is not None and row["bytes"] != sent):
            expected = row["direction"] + (f" {row['bytes'][:80]!r}" if row["direction"] == "write" else "")
            raise TranscriptMismatch(
                f"replay of {self.path.name}: {resource} got {what}, but the recording has {expected} "
                f"(t = {row.get('t', '?')} s)"
            )
        return queue.popleft()

    def write(self, session: Any, data: bytes) -> Any:
        sess = self._session(session)
        row = self._next(sess.resource, "write", bytes(data))
        if "error" in row:
            raise errors.VisaIOError(row["error"])
        return len(data), constants.StatusCode.success

    def read(self, session: Any, count: int) -> Any:
        sess = self._session(session)
        rest = self.unread.pop(sess.resource, None)
        if rest is None:
            row = self._next(sess.resource, "read")
            if "error" in row:
                raise errors.VisaIOError(row["error"])
            rest = row["bytes"]
        size = count
        if sess.attrs.get(constants.ResourceAttribute.termchar_enabled):
            end = rest.find(bytes([sess.attrs.get(constants.ResourceAttribute.termchar, 10)]))
            if 0 <= end < count:
                size = end + 1
        data, rest = rest[:size], rest[size:]
        if rest:
            self.unread[sess.resource] = rest
            terminated = size < count
            return data, (constants.StatusCode.success_termination_character_read if terminated else _MORE)
        return data, constants.StatusCode.success

    def assert_trigger(self, session: Any, protocol: Any) -> Any:
        self._next(self._session(session).resource, "trigger")
        return constants.StatusCode.success

    def read_stb(self, session: Any) -> Any:
        row = self._next(self._session(session).resource, "stb")
        return int(row.get("value", 0)), constants.StatusCode.success

    def clear(self, session: Any) -> Any:
        self.unread.pop(self._session(session).resource, None)
        return constants.StatusCode.success

    def flush(self, session: Any, mask: Any) -> Any:
        return constants.StatusCode.success

    def get_attribute(self, session: Any, attribute: Any) -> Any:
        sess = self.sessions.get(session)
        if not isinstance(sess, _ReplaySession):
            return 0, constants.StatusCode.error_invalid_object
        attr = attributes.AttributesByID.get(attribute)
        if attr is None or not attr.in_resource(sess.session_type):
            return 0, constants.StatusCode.error_nonsupported_attribute
        return sess.attrs.setdefault(attribute, attr.default), constants.StatusCode.success

    def set_attribute(self, session: Any, attribute: Any, value: Any) -> Any:
        sess = self.sessions.get(session)
        if not isinstance(sess, _ReplaySession):
            return constants.StatusCode.error_invalid_object
        sess.attrs[attribute] = value
        return constants.StatusCode.success

    def lock(self, session: Any, lock_type: Any, timeout: Any, requested_key: Any = None) -> Any:
        return "", constants.StatusCode.success

    def unlock(self, session: Any) -> Any:
        return constants.StatusCode.success

    def disable_event(self, session: Any, event_type: Any, mechanism: Any) -> Any:
        return constants.StatusCode.success

    def discard_events(self, session: Any, event_type: Any, mechanism: Any) -> Any:
        return constants.StatusCode.success


__all__ = [
    "RecordingVisaLibrary",
    "ReplayVisaLibrary",
    "Transcript",
    "TranscriptMismatch",
    "decode",
    "encode",
    "read_transcript",
    "transcript_file",
]
