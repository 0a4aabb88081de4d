"""``python -m spinlab.conformance DRIVER [--resource R --visa-library L] [--record DIR]
[--transcript DIR] [pytest options]``: the driver's role checks as one pytest run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    driver, *rest = args
    tests = str(Path(__file__).with_name("test_contract.py"))
    # a lab's own pytest addopts do not apply to the kit
    options = ["-p", "spinlab.conformance.plugin", "-o", "addopts=", "--rootdir", str(Path(__file__).parent)]
    return int(pytest.main([tests, *options, "--driver", driver, "-p", "no:cacheprovider", *rest]))


if __name__ == "__main__":
    sys.exit(main())
