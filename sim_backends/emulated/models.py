"""Which emulated instrument plays each role of the emulated bench, by driver name.

An emulated bench is built from one emulator per role (``awg``, ``scope``, ``source``, ...),
chosen by the name of the driver that talks to it (``bench:emulated?awg=keysight-33500b``,
``spinlab emulate --awg keysight-33500b``): the emulator answers ``*IDN?`` as that model does,
so the station's driver is found the same way as on a real bench. A new family adds one entry
here beside its emulator module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from spinlab.errors import ConfigError
from spinlab.sim_backends.emulated.analyser import EmulatedFSV, EmulatedXSeries
from spinlab.sim_backends.emulated.awg import Emulated33500B
from spinlab.sim_backends.emulated.gaussmeter import EmulatedLakeShore425, EmulatedLakeShore475
from spinlab.sim_backends.emulated.keithley import EmulatedKeithley2400
from spinlab.sim_backends.emulated.keithley_2450 import EmulatedKeithley2450
from spinlab.sim_backends.emulated.keithley_6221 import EmulatedKeithley6221
from spinlab.sim_backends.emulated.magnet import EmulatedKepcoMagnet
from spinlab.sim_backends.emulated.rs_scope import EmulatedRTM3000
from spinlab.sim_backends.emulated.scope import EmulatedInfiniiVision
from spinlab.sim_backends.emulated.tektronix_awg import EmulatedAWG5200
from spinlab.sim_backends.emulated.tektronix_scope import EmulatedMSO5

if TYPE_CHECKING:
    from spinlab.sim_backends.emulated.lab import EmulatedLab
    from spinlab.sim_backends.emulated.scpi import ScpiInstrument

#: role -> driver name -> the emulator built for an :class:`~.lab.EmulatedLab` (its lock and settings)
EMULATORS: dict[str, dict[str, Callable[[EmulatedLab], ScpiInstrument]]] = {
    "awg": {
        "keysight-33500b": lambda lab: Emulated33500B(memory_samples=lab.awg_memory_samples, lock=lab.lock),
        "tektronix-awg5200": lambda lab: EmulatedAWG5200(
            memory_samples=lab.awg_memory_samples, lock=lab.lock
        ),
    },
    "scope": {
        "keysight-infiniivision": lambda lab: EmulatedInfiniiVision(lock=lab.lock),
        "rs-rtb2000": lambda lab: EmulatedRTM3000(lock=lab.lock),
        "tektronix-mso": lambda lab: EmulatedMSO5(lock=lab.lock),
    },
    "source": {
        "keithley-2400": lambda lab: EmulatedKeithley2400(load_ohm=lab.device_resistance_ohm, lock=lab.lock),
        "keithley-2450": lambda lab: EmulatedKeithley2450(load_ohm=lab.device_resistance_ohm, lock=lab.lock),
        "keithley-6221": lambda lab: EmulatedKeithley6221(load_ohm=lab.device_resistance_ohm, lock=lab.lock),
    },
}
# the coil and the probe at the sample: the gaussmeter reads the magnet's field. Each has its own
# lock, as each has its own processor: a capture being computed does not hold up a ramp's timing
EMULATORS["magnet"] = {"kepco-bop": lambda lab: EmulatedKepcoMagnet()}
EMULATORS["gaussmeter"] = {
    "lakeshore-425": lambda lab: EmulatedLakeShore425(lab.coil_field_T, seed=lab.seed),
    "lakeshore-475": lambda lab: EmulatedLakeShore475(lab.coil_field_T, seed=lab.seed),
}

#: the emulator of each role when none is named (the built-in station's instruments)
DEFAULT_MODELS: dict[str, str] = {
    "awg": "keysight-33500b",
    "scope": "keysight-infiniivision",
    "source": "keithley-2400",
}
DEFAULT_MODELS.update(magnet="kepco-bop", gaussmeter="lakeshore-425")

#: the spectrum analyser on the device's RF output (its trace: :meth:`.lab.EmulatedLab.analyser_input`)
EMULATORS["analyser"] = {
    "keysight-xseries": lambda lab: EmulatedXSeries(seed=lab.seed, lock=lab.lock),
    "rs-fsv": lambda lab: EmulatedFSV(seed=lab.seed, lock=lab.lock),
}
DEFAULT_MODELS["analyser"] = "keysight-xseries"


def chosen_models(models: Mapping[str, str] | None) -> dict[str, str]:
    """The default models with ``models`` applied, each name checked (one line listing the
    emulators of the role when it is unknown)."""
    chosen = dict(DEFAULT_MODELS)
    for role, name in (models or {}).items():
        if role not in EMULATORS:
            raise ConfigError(
                f"the emulated bench has no role {role!r}; its roles are {', '.join(sorted(EMULATORS))}"
            )
        if name not in EMULATORS[role]:
            raise ConfigError(
                f"no emulated {role} named {name!r}; emulated {role}s: {', '.join(sorted(EMULATORS[role]))}"
            )
        chosen[role] = name
    return chosen


__all__ = ["DEFAULT_MODELS", "EMULATORS", "chosen_models"]
