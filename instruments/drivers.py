"""Drivers as plug-ins: which driver serves which role and which instruments.

Why a registry: a lab with another model adds a driver in its own package, registered through
the ``spinlab.drivers`` entry-point group, without touching spinlab. An entry point names a
:class:`DriverSpec` (``keysight-33500b = spinlab.instruments.keysight_awg:KEYSIGHT_33500B``);
spinlab registers its own the same way. A station file names a driver per role
(``[awg] driver = "keysight-33500b"``); without one, the instrument's ``*IDN?`` picks it
(:func:`driver_for_idn`). The spec also carries the model's capabilities, which the station
loader checks the file's settings against before anything is opened.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from spinlab.errors import ConfigError
from spinlab.instruments.roles import ROLES, missing_members

DRIVERS_GROUP = "spinlab.drivers"

log = logging.getLogger("spinlab.drivers")


@dataclass(frozen=True)
class DriverSpec:
    """One registered driver.

    ``driver`` is the class (built as ``driver(resource, visa_library=..., timeout=ms)``, see
    :mod:`.roles`); ``manufacturer`` and ``model`` are regular expressions matched, ignoring case,
    against the whole first and second fields of ``*IDN?``; ``capabilities`` is the model's data
    the station is checked against (an :class:`~.capabilities.AwgModel`, ``ScopeModel`` or
    ``SourceModel``).
    """

    name: str
    role: str
    driver: type
    manufacturer: str
    model: str
    capabilities: Any
    description: str = ""

    def serves(self, idn: str) -> bool:
        """Whether the instrument answering ``idn`` is one this driver is for."""
        fields = [field.strip() for field in idn.split(",")]
        return len(fields) >= 2 and all(
            re.fullmatch(pattern, value, re.IGNORECASE)
            for pattern, value in ((self.manufacturer, fields[0]), (self.model, fields[1]))
        )


def installed_drivers() -> dict[str, DriverSpec]:
    """Every registered driver that loads, by name (spinlab's own included)."""
    return _registry()[0]


def _registry() -> tuple[dict[str, DriverSpec], dict[str, str]]:
    """The drivers that load, and why each broken registration does not (logged: one lab's
    broken package must not stop the stations that do not use it)."""
    entries = {entry.name: entry for entry in metadata.entry_points(group=DRIVERS_GROUP)}
    good: dict[str, DriverSpec] = {}
    broken: dict[str, str] = {}
    for name, entry in sorted(entries.items()):
        try:
            good[name] = _load(entry)
        except ConfigError as exc:
            log.warning("%s", exc)
            broken[name] = str(exc)
    return good, broken


def _load(entry: metadata.EntryPoint) -> DriverSpec:
    where = f"entry point {entry.name!r} = {entry.value!r} of group {DRIVERS_GROUP!r}"
    try:
        spec = entry.load()
    except Exception as exc:  # a lab's package that does not import must say which one
        raise ConfigError(f"{where} does not load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(spec, DriverSpec):
        raise ConfigError(f"{where} is a {type(spec).__name__}, not a spinlab DriverSpec")
    if spec.name != entry.name or spec.role not in ROLES:
        raise ConfigError(
            f"{where} names driver {spec.name!r} for role {spec.role!r}; the entry point's name must be "
            f"the driver's and the role one of {sorted(ROLES)}"
        )
    missing = missing_members(spec.driver, spec.role)
    if missing:
        raise ConfigError(
            f"{where}: {spec.driver.__name__} lacks the {spec.role} role's {', '.join(missing)}"
        )
    return spec


def _names(drivers: dict[str, DriverSpec], role: str) -> str:
    return ", ".join(name for name, spec in drivers.items() if spec.role == role) or "none"


def find_driver(name: str, role: str) -> DriverSpec:
    """The installed driver ``name`` of ``role``; anything else is one line listing the installed."""
    drivers, broken = _registry()
    spec = drivers.get(name)
    if name in broken:
        raise ConfigError(broken[name])
    if spec is None:
        raise ConfigError(
            f"no installed {role} driver {name!r}; installed {role} drivers: {_names(drivers, role)}"
        )
    if spec.role != role:
        raise ConfigError(
            f"driver {name!r} drives a {spec.role}, not a {role}; installed {role} drivers: "
            f"{_names(drivers, role)}"
        )
    return spec


def driver_for_idn(role: str, idn: str) -> DriverSpec:
    """The one installed driver of ``role`` that serves the instrument answering ``idn``."""
    drivers = installed_drivers()
    serving = [spec for spec in drivers.values() if spec.role == role and spec.serves(idn)]
    if len(serving) == 1:
        return serving[0]
    if not serving:
        raise ConfigError(
            f"no installed {role} driver serves {idn.strip()!r}; installed {role} drivers: "
            f"{_names(drivers, role)} (install the lab's driver package, or name one with [{role}] driver)"
        )
    raise ConfigError(
        f"{idn.strip()!r} is served by several {role} drivers ({', '.join(s.name for s in serving)}); "
        f"name one with [{role}] driver"
    )


__all__ = ["DRIVERS_GROUP", "DriverSpec", "driver_for_idn", "find_driver", "installed_drivers"]
