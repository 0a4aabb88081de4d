"""An in-process pyvisa backend whose sessions talk to an :class:`EmulatedLab`'s instruments.

``pyvisa.ResourceManager(lab.visa_library())`` and
``pymeasure.adapters.VISAAdapter(resource, visa_library=lab.visa_library())`` then reach the
emulators exactly as they would reach hardware through NI-VISA or pyvisa-py, so the drivers run
unchanged. Modelled on pyvisa-sim's ``SimVisaLibrary``: a dispatcher from session handles to
session objects, with VISA semantics for reads (stop at the termination character when it is
enabled, END at the end of a reply, a timeout error when nothing is queued). Every open
resource is its own :class:`~.scpi.Session` of the instrument; a dropped connection (an
injected fault) fails its reads and writes with ``VI_ERROR_CONN_LOST`` until it is reopened.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Dict, Tuple

from pyvisa import attributes, constants, errors, highlevel, rname
from pyvisa.util import LibraryPath

from spinlab.sim_backends.emulated.scpi import ScpiInstrument, Session

if TYPE_CHECKING:  # pragma: no cover
    from spinlab.sim_backends.emulated.lab import EmulatedLab

_session_ids = itertools.count(1_000_001)
_library_ids = itertools.count(1)


class _Session:
    """One open resource: VISA attributes plus the emulator it talks to."""

    def __init__(self, resource_name: str, parsed: rname.ResourceName, instrument: ScpiInstrument) -> None:
        self.instrument = instrument
        self.port: Session = instrument.open_session()
        self.session_type = (parsed.interface_type_const, parsed.resource_class)
        self.attrs: Dict[Any, Any] = {
            constants.ResourceAttribute.resource_name: str(parsed),
            constants.ResourceAttribute.resource_class: parsed.resource_class,
            constants.ResourceAttribute.interface_type: parsed.interface_type_const,
            constants.ResourceAttribute.timeout_value: 2000,
            constants.ResourceAttribute.termchar: ord("\n"),
            constants.ResourceAttribute.termchar_enabled: False,
        }

    def get_attribute(self, attribute) -> Tuple[Any, constants.StatusCode]:
        try:
            attr = attributes.AttributesByID[attribute]
        except KeyError:
            return 0, constants.StatusCode.error_nonsupported_attribute
        if not attr.in_resource(self.session_type):
            return 0, constants.StatusCode.error_nonsupported_attribute
        return self.attrs.setdefault(attribute, attr.default), constants.StatusCode.success

    def set_attribute(self, attribute, value) -> constants.StatusCode:
        try:
            attr = attributes.AttributesByID[attribute]
        except KeyError:
            return constants.StatusCode.error_nonsupported_attribute
        if not attr.in_resource(self.session_type):
            return constants.StatusCode.error_nonsupported_attribute
        if not attr.write:
            return constants.StatusCode.error_attribute_read_only
        self.attrs[attribute] = value
        return constants.StatusCode.success

    @property
    def timeout_s(self) -> float:
        value = self.attrs.get(constants.ResourceAttribute.timeout_value, 2000)
        if value in (None, constants.VI_TMO_INFINITE):
            return 3600.0
        return float(value) / 1000.0

    def _alive(self) -> Session:
        if not self.port.alive:
            raise errors.VisaIOError(constants.StatusCode.error_connection_lost)
        return self.port

    def read(self, count: int) -> Tuple[bytes, constants.StatusCode]:
        inst = self.instrument
        with inst.lock:
            port = self._alive()
            if not port.wait_ready(self.timeout_s):
                self._alive()
                inst.note_unterminated_read()
                raise errors.VisaIOError(constants.StatusCode.error_timeout)
            term = None
            if self.attrs.get(constants.ResourceAttribute.termchar_enabled):
                term = bytes([self.attrs.get(constants.ResourceAttribute.termchar, 10)])
            data = port.read(count, stop_at=term)
            if term is not None and data.endswith(term):
                return data, constants.StatusCode.success_termination_character_read
            if not port.output:
                return data, constants.StatusCode.success  # END: the reply is complete
            return data, constants.StatusCode.success_max_count_read

    def write(self, data: bytes) -> Tuple[int, constants.StatusCode]:
        self._alive().write(bytes(data))
        return len(data), constants.StatusCode.success


class EmulatedVisaLibrary(highlevel.VisaLibraryBase):
    """pyvisa backend over one :class:`EmulatedLab`; build it with :meth:`for_lab`."""

    lab: EmulatedLab

    @classmethod
    def for_lab(cls, lab: EmulatedLab) -> EmulatedVisaLibrary:
        # the library path keys pyvisa's registry of libraries: one per lab
        library = cls(LibraryPath(f"spinlab-emulated-lab-{next(_library_ids)}", "spinlab"))
        library.lab = lab
        return library

    @staticmethod
    def get_library_paths() -> Tuple[LibraryPath, ...]:
        return (LibraryPath("spinlab-emulated", "spinlab"),)

    @staticmethod
    def get_debug_info() -> Dict[str, str]:
        return {"backend": "spinlab emulated instruments (in-process)"}

    def _init(self) -> None:
        self.sessions: Dict[int, Any] = {}

    def _new_session(self, obj: Any) -> int:
        session = next(_session_ids)
        self.sessions[session] = obj
        return session

    def open_default_resource_manager(self):
        return self._new_session(self), constants.StatusCode.success

    def list_resources(self, session, query: str = "?*::INSTR") -> Tuple[str, ...]:
        found = rname.filter(list(self.lab.instruments), query)
        if not found:
            raise errors.VisaIOError(constants.StatusCode.error_resource_not_found)
        return tuple(found)

    def open(
        self,
        session,
        resource_name: str,
        access_mode=constants.AccessModes.no_lock,
        open_timeout=constants.VI_TMO_IMMEDIATE,
    ):
        try:
            parsed = rname.parse_resource_name(resource_name)
        except rname.InvalidResourceName:
            raise errors.VisaIOError(constants.StatusCode.error_invalid_resource_name) from None
        instrument = self._instrument_for(str(parsed))
        if instrument is None:
            # like a real VISA library: opening an absent instrument fails loudly
            raise errors.VisaIOError(constants.StatusCode.error_resource_not_found)
        return self._new_session(_Session(resource_name, parsed, instrument)), constants.StatusCode.success

    def _instrument_for(self, name: str) -> ScpiInstrument | None:
        for resource, instrument in self.lab.instruments.items():
            if str(rname.parse_resource_name(resource)) == name:
                return instrument
        return None

    def close(self, session) -> constants.StatusCode:
        sess = self.sessions.pop(session, None)
        if sess is None:
            return constants.StatusCode.error_invalid_object
        if isinstance(sess, _Session):
            sess.port.close()
        return constants.StatusCode.success

    def _session(self, session) -> _Session:
        sess = self.sessions.get(session)
        if not isinstance(sess, _Session):
            raise errors.VisaIOError(constants.StatusCode.error_invalid_object)
        return sess

    def read(self, session, count: int):
        return self._session(session).read(count)

    def write(self, session, data: bytes):
        return self._session(session).write(data)

    def clear(self, session) -> constants.StatusCode:
        self._session(session)._alive().clear()
        return constants.StatusCode.success

    def flush(self, session, mask) -> constants.StatusCode:
        if mask & (
            constants.BufferOperation.discard_read_buffer | constants.BufferOperation.discard_receive_buffer
        ):
            port = self._session(session).port
            with port.instrument.lock:
                port.output.clear()
        return constants.StatusCode.success

    def assert_trigger(self, session, protocol) -> constants.StatusCode:
        # GPIB Group Execute Trigger / VXI-11 trigger: same as *TRG
        self._session(session)._alive().write(b"*TRG\n")
        return constants.StatusCode.success

    def read_stb(self, session):
        sess = self._session(session)
        with sess.instrument.lock:
            return sess.instrument.status_byte(sess._alive()), constants.StatusCode.success

    def get_attribute(self, session, attribute):
        sess = self.sessions.get(session)
        if not isinstance(sess, _Session):
            return 0, constants.StatusCode.error_invalid_object
        return sess.get_attribute(attribute)

    def set_attribute(self, session, attribute, attribute_state) -> constants.StatusCode:
        sess = self.sessions.get(session)
        if not isinstance(sess, _Session):
            return constants.StatusCode.error_invalid_object
        return sess.set_attribute(attribute, attribute_state)

    def lock(self, session, lock_type, timeout, requested_key=None):
        return "", constants.StatusCode.success

    def unlock(self, session) -> constants.StatusCode:
        return constants.StatusCode.success

    def disable_event(self, session, event_type, mechanism) -> constants.StatusCode:
        return constants.StatusCode.success

    def discard_events(self, session, event_type, mechanism) -> constants.StatusCode:
        return constants.StatusCode.success
