"""Physics simulators, emulated instruments and the twin as a Device.

``open_simulator(name, **options)`` is what ``spinlab.open_device("sim:NAME?k=v")`` calls:
``sim:vortex`` (auto-oscillator model of a vortex STO, numba, fast) and ``sim:macrospin``
(LLGS macrospin, numba with forward sensitivities, differentiable in its physical parameters);
``sim:PATH.json`` opens a model file written by ``spinlab fit-physics``. Simulator modules are
imported lazily so opening one never pays for the other (numba / torch start-up).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from spinlab.errors import DeviceAddressError

if TYPE_CHECKING:
    from spinlab.device import Device

#: Simulator name -> (module, opener function). The opener converts string options itself.
SIMULATORS: dict[str, tuple[str, str]] = {
    "vortex": ("spinlab.sim_backends.vortex", "open_vortex"),
    "macrospin": ("spinlab.sim_backends.macrospin", "open_macrospin"),
}


def open_simulator(name: str, **options: Any) -> Device:
    """Return the simulator Device called ``name`` built from ``options``.

    Options may be strings (from an address query string) or typed keywords; unknown names or
    options raise :class:`~spinlab.errors.DeviceAddressError` / :class:`~spinlab.errors.ConfigError`
    listing the valid ones.
    """
    from spinlab.sim_backends.model_file import is_model_path, load_model

    if is_model_path(name):
        simulator, saved, _ = load_model(name)
        if simulator not in SIMULATORS:
            raise DeviceAddressError(
                f"model file {name!r} is for simulator {simulator!r}; this spinlab has {sorted(SIMULATORS)}"
            )
        return open_simulator(simulator, **{**saved, **options})
    key = str(name).strip().lower()
    if key not in SIMULATORS:
        raise DeviceAddressError(
            f"unknown simulator {name!r}; available: {', '.join('sim:' + n for n in SIMULATORS)}, "
            "or sim:PATH.json (a model file from `spinlab fit-physics`)"
        )
    module_name, opener = SIMULATORS[key]
    return getattr(import_module(module_name), opener)(**options)


__all__ = ["open_simulator", "SIMULATORS"]
