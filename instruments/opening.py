"""Opening a station: a station file (or ``"emulated"``) -> an open, locked Bench.

Real instruments open through pyvisa here. Emulated ones are not built here: the hardware layer
imports no backend, so a station whose ``visa_library`` names an emulator (``"emulated"``) asks
the package that registered that emulator through the ``spinlab.emulators`` entry-point group
(spinlab's own is ``spinlab.sim_backends.emulated.station``). An emulator is
``emulator(station, *, device, seed, faults, scope_noise_V, models) -> Bench`` (``models``: the
driver name of the emulated instrument of each role it was asked for, e.g. ``{"awg":
"keysight-33500b"}``) and builds its bench with :func:`connect`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymeasure.instruments import Instrument

from spinlab.device import Device
from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.drivers import DriverSpec, driver_for_idn, find_driver
from spinlab.instruments.links import FAULTS, Link, one_line
from spinlab.instruments.scpi import RAW_REPLY, send_at_once
from spinlab.instruments.station import Station, builtin_station, load_station
from spinlab.instruments.transcript import RecordingVisaLibrary, ReplayVisaLibrary, Transcript
from spinlab.locks import ResourceLocks

if TYPE_CHECKING:
    from spinlab.instruments.bench import Bench

EMULATORS_GROUP = "spinlab.emulators"

#: What messages call each role.
ROLE_NAMES = {"awg": "AWG", "scope": "oscilloscope", "source": "bias source"}
ROLE_NAMES.update(magnet="magnet supply", gaussmeter="gaussmeter")
#: spinlab's own driver of each role (its data are the station's defaults; over a serial line it
#: also reads ``*IDN?`` of a section naming no driver, as it knows the line's settings).
PROBES = {"awg": "keysight-33500b", "scope": "keysight-infiniivision", "source": "keithley-2400"}
ROLE_NAMES["analyser"] = "spectrum analyser"
PROBES["analyser"] = "keysight-xseries"
PROBES.update(magnet="kepco-bop", gaussmeter="lakeshore-425")

Emulator = Callable[..., "Bench"]


class IdnProbe(Instrument):
    """A connection that sends ``*IDN?`` and nothing else: a driver may send its own model's
    setup on opening, which another model answers with an error (a 2400's format command is an
    "Undefined header" on a 2450)."""

    def __init__(self, adapter: Any, **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, "instrument being identified", includeSCPI=False, **kwargs)

    id = Instrument.measurement("*IDN?", """Get the identification (the whole reply).""", **RAW_REPLY)


def emulator_for(visa_library: str) -> Emulator:
    """The emulator an installed package registered for ``visa_library``."""
    for entry in metadata.entry_points(group=EMULATORS_GROUP):
        if entry.name == visa_library:
            return entry.load()
    raise ConfigError(
        f"no installed package emulates visa_library = {visa_library!r} (spinlab's own "
        "'emulated' is registered when spinlab is installed: pip install -e . again)"
    )


def open_bench(
    target: str,
    *,
    device: str = "sim:vortex",
    seed: int | str = 0,
    faults: str | None = None,
    scope_noise_V: float | str | None = None,
    record: str | None = None,
    replay: str | None = None,
    **options: Any,
) -> Bench:
    """Open a bench: ``"emulated"`` (built-in emulated station around ``device``) or the path
    of a station file. A station whose ``visa_library`` is ``"emulated"`` gets emulated
    instruments (an :class:`~spinlab.sim_backends.emulated.EmulatedLab`) around ``device``; any
    other opens real instruments through pyvisa, after locking them for this process. ``seed``
    seeds the emulated instruments' noise and faults and, for a ``sim:`` model whose address does
    not set one, the model's noise. Emulated stations also take ``faults`` (a fault spec, see
    ``spinlab.sim_backends.emulated.faults``), ``scope_noise_V`` (the scope's input noise) and,
    per role, the driver name of the instrument to emulate (``awg="keysight-33500b"``).
    ``record``: a folder to write the transcript of every byte exchanged with the instruments
    into; ``replay``: a transcript (file, or a folder holding one) whose recorded replies answer
    the station's drivers instead of its instruments (see :mod:`.transcript`).
    """
    models = {role: str(options.pop(role)) for role in list(options) if role in ROLE_NAMES}
    if options:
        raise ConfigError(
            f"unknown bench option(s) {sorted(options)}; a bench accepts 'device', 'seed', 'faults', "
            f"'scope_noise_V', 'record', 'replay' and the emulated instrument of a role "
            f"({', '.join(ROLE_NAMES)}: a driver name) (emulated stations)"
        )
    seed = _option(int, "seed", seed)
    path = builtin_station("emulated") if target == "emulated" else Path(target)
    station = load_station(path)
    if station.wiring.awg_channel != 1:
        raise ConfigError(
            f"{station.path}: [wiring] awg_channel = {station.wiring.awg_channel}, but "
            "the Keysight33500B driver drives channel 1 only; cable the device to channel 1"
        )
    if replay is not None:
        if record is not None:
            raise ConfigError("a bench either records a transcript or replays one, not both")
        return connect(station, ReplayVisaLibrary.from_file(replay))
    if station.emulated:
        noise = None if scope_noise_V is None else _option(float, "scope_noise_V", scope_noise_V)
        emulator = emulator_for(station.resources.visa_library)
        if models:
            station = station.with_drivers(models)
        extra = {} if record is None else {"record": record}  # an emulator without record refuses it
        return emulator(
            station, device=device, seed=seed, faults=faults, scope_noise_V=noise, models=models, **extra
        )
    if faults is not None or scope_noise_V is not None or models:
        raise ConfigError(
            f"{station.path} reaches real instruments; 'faults', 'scope_noise_V' and emulated models "
            'apply to emulated stations only (bench:emulated, or visa_library = "emulated")'
        )
    return connect(station, station.resources.visa_library, record=record)


def _option(kind: type, name: str, value: Any) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"bench option {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None


def connect(
    station: Station,
    visa_library: Any,
    *,
    model: Device | None = None,
    lab: Any = None,
    cleanup: tuple[Callable[[], None], ...] = (),
    record: str | None = None,
) -> Bench:
    """Lock the station (unless its instruments are in-process emulators, private to this
    process), open its instruments with their drivers (each builds its own VISA adapter) and the
    Bench; on any failure close whatever was opened, run ``cleanup`` and release the locks.

    Each instrument's driver is the one its section names, which must serve the instrument's
    ``*IDN?``; a section without ``driver`` gets the installed driver that serves it (read on a
    connection of its own that sends nothing but ``*IDN?``, see :class:`IdnProbe`). With
    ``record`` (a folder) every byte the drivers exchange goes into a transcript there."""
    from spinlab.instruments.bench import Bench  # bench.py re-exports open_bench from here

    res = station.resources
    locks = None
    links: dict[str, Link] = {}
    chosen: dict[str, str] = {}
    if record is not None:
        transcript = Transcript.create(record, {resource: key for key, resource in res.instruments.items()})
        visa_library = RecordingVisaLibrary.wrap(visa_library, transcript)
        cleanup = (*cleanup, transcript.close)

    def link(key: str, spec: DriverSpec | type, resource: str) -> Link:
        driver = spec.driver if isinstance(spec, DriverSpec) else spec

        def open_driver(timeout_s: float) -> Any:
            opened = driver(resource, visa_library=visa_library, timeout=int(timeout_s * 1000))
            send_at_once(opened.adapter)
            return opened

        try:
            return Link(key, ROLE_NAMES[key], resource, open_driver, res.timeout_s)
        except FAULTS as exc:
            raise InstrumentError(
                f"cannot reach the {ROLE_NAMES[key]} at {resource} (station {station.path}): {one_line(exc)}"
            ) from exc

    try:
        if not station.emulated:
            locks = ResourceLocks(res.instruments.values(), what=f"station {station.station.name!r}")
        for key, resource in res.instruments.items():
            named = station.driver_name(key)
            if named is None:
                serial = resource.upper().startswith("ASRL")
                probe = link(key, find_driver(PROBES[key], key) if serial else IdnProbe, resource)
                probe.close()
                spec = driver_for_idn(key, probe.idn)
                links[key] = link(key, spec, resource)
            else:
                spec = find_driver(named, key)
                links[key] = link(key, spec, resource)
                if not spec.serves(links[key].idn):
                    raise ConfigError(_mismatch(station, key, spec, resource, links[key].idn))
            chosen[key] = spec.name
        if any(station.driver_name(key) is None and name != PROBES[key] for key, name in chosen.items()):
            station = station.with_drivers(chosen)  # the chosen drivers' capabilities apply
    except BaseException:
        for link in links.values():
            link.close()
        for callback in cleanup:
            callback()
        if locks is not None:
            locks.release()
        raise
    return Bench(station, links, cleanup=cleanup, model=model, lab=lab, locks=locks, drivers=chosen)


def _mismatch(station: Station, key: str, spec: DriverSpec, resource: str, idn: str) -> str:
    try:
        fits = f"its driver is {driver_for_idn(key, idn).name!r}"
    except ConfigError:
        fits = "no installed driver serves it"
    return (
        f"{station.path}: [{key}] driver = {spec.name!r}, but the {ROLE_NAMES[key]} at {resource} answers "
        f"{idn.strip()!r} ({fits}); fix [{key}] driver or leave it out to let *IDN? choose"
    )


__all__ = ["EMULATORS_GROUP", "connect", "emulator_for", "open_bench"]
