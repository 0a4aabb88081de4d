"""Opening a station: a station file (or ``"emulated"``) -> an open, locked Bench.

Real instruments open through pyvisa here. Emulated ones are not built here: the hardware layer
imports no backend, so a station whose ``visa_library`` names an emulator (``"emulated"``) asks
the package that registered that emulator through the ``spinlab.emulators`` entry-point group
(spinlab's own is ``spinlab.sim_backends.emulated.station``). An emulator is
``emulator(station, *, device, seed, faults, scope_noise_V) -> Bench`` and builds its bench
with :func:`connect`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinlab.device import Device
from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.links import FAULTS, Link, one_line
from spinlab.instruments.station import Station, builtin_station, load_station
from spinlab.locks import ResourceLocks

if TYPE_CHECKING:
    from spinlab.instruments.bench import Bench

EMULATORS_GROUP = "spinlab.emulators"

Emulator = Callable[..., "Bench"]


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
    **options: Any,
) -> Bench:
    """Open a bench: ``"emulated"`` (built-in emulated station around ``device``) or the path
    of a station file. A station whose ``visa_library`` is ``"emulated"`` gets emulated
    instruments (an :class:`~spinlab.sim_backends.emulated.EmulatedLab`) around ``device``; any
    other opens real instruments through pyvisa, after locking them for this process. ``seed``
    seeds the emulated instruments' noise and faults and, for a ``sim:`` model whose address does
    not set one, the model's noise. Emulated stations also take ``faults`` (a fault spec, see
    ``spinlab.sim_backends.emulated.faults``) and ``scope_noise_V`` (the scope's input noise).
    """
    if options:
        raise ConfigError(
            f"unknown bench option(s) {sorted(options)}; a bench accepts 'device', "
            "'seed', 'faults' and 'scope_noise_V' (emulated stations)"
        )
    seed = _option(int, "seed", seed)
    path = builtin_station("emulated") if target == "emulated" else Path(target)
    station = load_station(path)
    if station.wiring.awg_channel != 1:
        raise ConfigError(
            f"{station.path}: [wiring] awg_channel = {station.wiring.awg_channel}, but "
            "the Keysight33500B driver drives channel 1 only; cable the device to channel 1"
        )
    if station.emulated:
        noise = None if scope_noise_V is None else _option(float, "scope_noise_V", scope_noise_V)
        emulator = emulator_for(station.resources.visa_library)
        return emulator(station, device=device, seed=seed, faults=faults, scope_noise_V=noise)
    if faults is not None or scope_noise_V is not None:
        raise ConfigError(
            f"{station.path} reaches real instruments; 'faults' and 'scope_noise_V' apply "
            'to emulated stations only (bench:emulated, or visa_library = "emulated")'
        )
    return connect(station, station.resources.visa_library)


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
) -> Bench:
    """Lock the station (unless its instruments are in-process emulators, private to this
    process), open its instruments (each driver builds its own VISA adapter) and the Bench; on
    any failure close whatever was opened, run ``cleanup`` and release the locks."""
    from spinlab.instruments.bench import Bench  # bench.py re-exports open_bench from here
    from spinlab.instruments.keithley import Keithley2400
    from spinlab.instruments.keysight_awg import Keysight33500B
    from spinlab.instruments.keysight_scope import InfiniiVisionScope

    res = station.resources
    roles = {
        "awg": (Keysight33500B, "AWG"),
        "scope": (InfiniiVisionScope, "oscilloscope"),
        "source": (Keithley2400, "bias source"),
    }
    locks = None
    links: dict[str, Link] = {}

    def opener(cls: type, resource: str) -> Callable[[float], Any]:
        return lambda timeout_s: cls(resource, visa_library=visa_library, timeout=int(timeout_s * 1000))

    try:
        if not station.emulated:
            locks = ResourceLocks(res.instruments.values(), what=f"station {station.station.name!r}")
        for key, resource in res.instruments.items():
            cls, role = roles[key]
            try:
                links[key] = Link(key, role, resource, opener(cls, resource), res.timeout_s)
            except FAULTS as exc:
                raise InstrumentError(
                    f"cannot reach the {role} at {resource} (station {station.path}): {one_line(exc)}"
                ) from exc
    except BaseException:
        for link in links.values():
            link.close()
        for callback in cleanup:
            callback()
        if locks is not None:
            locks.release()
        raise
    return Bench(station, links, cleanup=cleanup, model=model, lab=lab, locks=locks)


__all__ = ["EMULATORS_GROUP", "connect", "emulator_for", "open_bench"]
