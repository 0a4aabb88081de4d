"""A simulator's address options go through a pydantic model built from the kinds it declares."""

from __future__ import annotations

import pytest

from spinlab.errors import ConfigError
from spinlab.registry import open_device
from spinlab.sim_backends import vortex
from spinlab.sim_backends._options import AddressOptions, options_model


def test_the_options_of_an_address_are_a_model_with_every_declared_name():
    model = options_model("sim:vortex", tuple(vortex.OPTION_SPEC.items()))
    assert issubclass(model, AddressOptions) and set(model.model_fields) == set(vortex.OPTION_SPEC)


def test_address_strings_arrive_typed():
    device = open_device("sim:vortex?noise=0&seed=3&output=POWER")
    assert device.seed == 3 and device.noise == 0.0 and device.output == "power"


@pytest.mark.parametrize(
    "options,says",
    [
        ({"seed": None}, "option seed of sim:vortex must be an integer"),
        ({"seed": True}, "option seed of sim:vortex must be an integer"),
        ({"noise": "inf"}, "option noise of sim:vortex must be a finite number"),
        ({"nois": "0"}, "does not take option(s) ['nois']; valid options:"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(options, says):
    with pytest.raises(ConfigError) as info:
        open_device("sim:vortex", **options)
    assert says in str(info.value) and "\n" not in str(info.value)
