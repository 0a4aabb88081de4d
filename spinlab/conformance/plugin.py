"""The kit as a pytest plugin: ``--driver NAME`` (and where to check it) picks the checks of the
driver's role, one test each (``python -m spinlab.conformance`` loads it for you)."""

from __future__ import annotations

from typing import Any

import pytest

from spinlab.conformance import NotApplicable, check, driver_spec, promises


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spinlab-conformance", "spinlab driver conformance")
    group.addoption("--driver", help="registered driver name, or module:ATTRIBUTE naming a DriverSpec")
    group.addoption("--resource", default=None, help="VISA resource of a real instrument (default: emulated)")
    group.addoption("--visa-library", default="", help="pyvisa library for --resource (e.g. @py)")
    group.addoption("--transcript", default=None, help="folder of recorded checks to replay (no instrument)")
    group.addoption("--record", default=None, help="folder to write each check's transcript into")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "promise" in metafunc.fixturenames:
        name = metafunc.config.getoption("driver")
        if not name:
            raise pytest.UsageError("name the driver to check: --driver NAME (e.g. keysight-33500b)")
        metafunc.parametrize("promise", list(promises(driver_spec(name).role)))


@pytest.fixture
def where(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where to run the checks (see :func:`spinlab.conformance.target`)."""
    get = request.config.getoption
    return {
        "resource": get("resource"),
        "visa_library": get("visa_library"),
        "transcript": get("transcript"),
        "record": get("record"),
    }


def run_check(driver: str, promise: str, where: dict[str, Any]) -> None:
    """One check, skipped (with the reason) where it cannot run."""
    try:
        check(driver, promise, **where)
    except NotApplicable as exc:
        pytest.skip(str(exc))
