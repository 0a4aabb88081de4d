"""The emulated bench: the real drivers and Bench over emulated instruments wired to a model.

A station whose ``visa_library`` is ``"emulated"`` (``bench:emulated`` is the one spinlab ships)
opens here: the hardware layer finds this function through the ``spinlab.emulators`` entry-point
group, so it never imports a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from spinlab.errors import ConfigError
from spinlab.instruments.opening import connect
from spinlab.registry import open_device, parse_address
from spinlab.sim_backends.emulated.lab import EmulatedLab

if TYPE_CHECKING:
    from spinlab.instruments.bench import Bench
    from spinlab.instruments.station import Station


def open_emulated_bench(
    station: Station,
    *,
    device: str,
    seed: int,
    faults: str | None,
    scope_noise_V: float | None,
    models: Mapping[str, str] | None = None,
    record: str | None = None,
) -> Bench:
    """An :class:`EmulatedLab` around the model at ``device`` (seeded with ``seed`` unless its
    address sets one), its instruments the ``models`` asked for (role -> driver name), reached
    in-process through pyvisa by the station's drivers (``record``: a folder for the transcript)."""
    if parse_address(device)[0] == "bench":
        raise ConfigError(f"the emulated bench needs a device model (sim:..., twin:...), got {device!r}")
    # one seed for the whole emulated bench: instrument noise and (unless given) the model's noise
    model = open_device(device, defaults={"seed": seed})
    try:
        extra: dict[str, float] = {} if scope_noise_V is None else {"scope_noise_V": scope_noise_V}
        if station.analyser is not None:  # the station's RF chain is the emulated one
            extra["rf_gain_dB"] = station.analyser.chain_gain_dB
        lab = EmulatedLab(model, seed=seed, faults=faults, models=models, **extra)
    except BaseException:
        model.close()
        raise
    return connect(
        station, lab.visa_library(), model=model, lab=lab, cleanup=(lab.close, model.close), record=record
    )


__all__ = ["open_emulated_bench"]
