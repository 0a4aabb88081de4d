"""A step left mid-exchange (a signal between a query and its reply) must not leave its reply for
the next step: the field park once read the supply's mode code 1 as a set point of 1 A and
ramped the field down from there, a 2 A step (tests/test_field_signals.py caught it under load)."""

from __future__ import annotations

import time

import pytest

from spinlab.instruments.kepco_bop import KepcoBOP
from spinlab.instruments.links import Link
from spinlab.sim_backends.emulated.lab import EmulatedLab
from spinlab.sim_backends.emulated.tcp_server import serve_tcp
from spinlab.testing import Doubler


def test_the_step_after_an_interrupted_query_reads_its_own_replies():
    lab = EmulatedLab(Doubler(), models={"magnet": "kepco-bop"})
    with serve_tcp(lab, awg_port=0, scope_port=0, source_port=0) as servers:
        resource = servers.resources["magnet"]
        link = Link(
            "magnet",
            "magnet supply",
            resource,
            lambda timeout_s: KepcoBOP(resource, visa_library="@py", timeout=int(timeout_s * 1000)),
            2.0,
        )
        try:
            with link.step("setting the field") as supply:
                supply.enter_current_mode(20.0)
                supply.current_setpoint_A = 3.0
            with pytest.raises(KeyboardInterrupt), link.step("checking the field") as supply:
                supply.write("FUNC:MODE?")
                time.sleep(0.2)  # its reply arrives while the signal is handled
                raise KeyboardInterrupt  # Ctrl-C after the query, before its reply is read
            with link.step("parking the field") as supply:
                state = supply.output_state()
            assert state.on and state.mode == "CURR" and state.setpoint_A == 3.0
        finally:
            link.close()
