"""One test per promise of the driver's role (collected by ``python -m spinlab.conformance``)."""

from __future__ import annotations

from typing import Any

import pytest

from spinlab.conformance.plugin import run_check


def test_promise(promise: str, where: dict[str, Any], request: pytest.FixtureRequest) -> None:
    run_check(request.config.getoption("driver"), promise, where)
