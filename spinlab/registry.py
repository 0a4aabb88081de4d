"""Device schemes: ``open_device("SCHEME:TARGET?key=value")`` looks SCHEME up in one table.

The table is filled from the ``spinlab.devices`` entry-point group, so a package adds a scheme
by declaring, in its own ``pyproject.toml``::

    [project.entry-points."spinlab.devices"]
    myscheme = "mypackage.devices:open_my_device"

spinlab's own ``sim:``, ``bench:`` and ``twin:`` register the same way, so this module (the
core) imports no backend. :func:`register_scheme` adds one at run time (tests, notebooks).

An opener is ``opener(target: str, **options) -> Device``; it converts string options itself
and rejects unknown ones with a :class:`~spinlab.errors.ConfigError`. Every opener accepts
``seed``, which seeds every random stream of the device (noise; on hardware: nothing).

Option precedence, highest first (the one place it is written down):

1. keyword options given to :func:`open_device` in Python,
2. options in the address (``sim:vortex?seed=3``),
3. ``defaults`` given to :func:`open_device` (the CLI passes ``--seed`` here, so a seed in the
   address wins over the command's default).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from spinlab.errors import DeviceAddressError

if TYPE_CHECKING:
    from spinlab.device import Device

ENTRY_POINT_GROUP = "spinlab.devices"

Opener = Callable[..., "Device"]

_lock = threading.Lock()
_runtime: dict[str, Opener] = {}
_entry_points: dict[str, metadata.EntryPoint] | None = None


def _normalise(scheme: str) -> str:
    name = str(scheme).strip().lower()
    if not name.isidentifier():
        raise DeviceAddressError(f"device scheme {scheme!r} must be a name like 'sim' or 'bench'")
    return name


def register_scheme(scheme: str, opener: Opener) -> None:
    """Make ``SCHEME:...`` addresses open with ``opener(target, **options)`` in this process."""
    if not callable(opener):
        raise TypeError(f"opener for scheme {scheme!r} must be callable")
    with _lock:
        _runtime[_normalise(scheme)] = opener


def unregister_scheme(scheme: str) -> None:
    """Remove a scheme added with :func:`register_scheme` (entry points stay)."""
    with _lock:
        _runtime.pop(_normalise(scheme), None)


def _installed() -> dict[str, metadata.EntryPoint]:
    global _entry_points
    if _entry_points is None:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name.strip().lower(), ep)
        _entry_points = found
    return _entry_points


def schemes() -> list[str]:
    """Every scheme that can be opened, sorted."""
    return sorted(set(_installed()) | set(_runtime))


def opener_for(scheme: str) -> Opener:
    """The opener of ``scheme``; unknown schemes name the known ones."""
    name = _normalise(scheme)
    with _lock:
        if name in _runtime:
            return _runtime[name]
    entry = _installed().get(name)
    if entry is None:
        known = ", ".join(f"{s}:" for s in schemes())
        raise DeviceAddressError(f"unknown device scheme {scheme!r}; known schemes: {known}")
    try:
        opener: Opener = entry.load()
    except Exception as exc:  # a broken plug-in must not look like a spinlab bug
        raise DeviceAddressError(
            f"device scheme {name!r} is registered by {entry.value!r}, which failed to load "
            f"({type(exc).__name__}: {exc}); reinstall the package that provides it"
        ) from exc
    return opener


def parse_address(address: str) -> tuple[str, str, dict[str, str]]:
    """``"sim:vortex?noise=0"`` -> ``("sim", "vortex", {"noise": "0"})``."""
    if not isinstance(address, str) or ":" not in address:
        raise DeviceAddressError(
            f"device address {address!r} must look like 'sim:vortex', 'sim:macrospin', "
            "'bench:emulated', 'bench:PATH.toml' or 'twin:PATH.pt'"
        )
    scheme, _, rest = address.partition(":")
    target, _, query = rest.partition("?")
    try:
        options = dict(parse_qsl(query, keep_blank_values=False, strict_parsing=bool(query)))
    except ValueError as exc:
        raise DeviceAddressError(f"bad options {query!r} in device address {address!r}: {exc}") from None
    return scheme.strip().lower(), target.strip(), options


def open_device(address: str, *, defaults: Mapping[str, Any] | None = None, **options: Any) -> Device:
    """Resolve an address string to a Device (see the module docstring for the precedence).

    ``sim:NAME[?opt=val&...]`` physics simulator, ``bench:emulated`` the real drivers on
    emulated instruments, ``bench:PATH.toml`` a station, ``twin:PATH`` a trained Spin-Neural
    ODE, or any scheme a plug-in registers.
    """
    scheme, target, query = parse_address(address)
    opener = opener_for(scheme)
    device = opener(target, **{**dict(defaults or {}), **query, **options})
    device.address = address
    return device


__all__ = [
    "ENTRY_POINT_GROUP",
    "register_scheme",
    "unregister_scheme",
    "schemes",
    "opener_for",
    "parse_address",
    "open_device",
]
