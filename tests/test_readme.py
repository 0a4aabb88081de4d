"""The README and the docs pages: the two commands first and exact, every relative link and anchor
resolves, every page is reachable from the README, and every documented `spinlab` command line
names commands and flags that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from spinlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

TORCH = "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0"
SETUP = f"{TORCH} && .venv/bin/pip install -q -c constraints.txt"
SETUP_AND_DEMO = f"{SETUP} -e . && .venv/bin/spinlab data fetch fsdd && .venv/bin/spinlab demo"
SETUP_AND_TESTS = f"{SETUP} -e '.[test]' && .venv/bin/python -m pytest"

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def code_lines(text: str) -> list[str]:
    """The lines of the page's indented code blocks, a line continued with `\\` joined to the next."""
    lines, joined = [], ""
    for line in text.splitlines():
        if not line.startswith("    "):
            joined = ""
            continue
        joined += line.strip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        lines.append(joined)
        joined = ""
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_readme_starts_with_the_two_commands_exactly_as_ci_runs_them() -> None:
    commands = code_lines(README.read_text())
    assert commands[:2] == [SETUP_AND_DEMO, SETUP_AND_TESTS]
    assert SETUP_AND_TESTS in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target} has no heading #{anchor}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [page.name for page in PAGES[1:] if page not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_path_that_only_works_in_this_checkout(page: Path) -> None:
    assert "../shared" not in page.read_text()


def documented_commands() -> list[tuple[str, str]]:
    return [
        (page.name, line)
        for page in PAGES
        for line in code_lines(page.read_text())
        if line.startswith("spinlab ")
    ]


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The (click) command a line names, and the words after its name."""
    command = typer.main.get_command(app)
    while hasattr(command, "get_command") and words and not words[0].startswith("-"):
        sub = command.get_command(command.context_class(command), words[0])
        assert sub is not None, f"no command {words[0]!r} in {command.name!r}"
        command, words = sub, words[1:]
    return command, words


@pytest.mark.parametrize("where, line", documented_commands())
def test_documented_command_lines_name_real_commands_and_flags(where: str, line: str) -> None:
    words = shlex.split(line, comments=True)[1:]
    if any(word.isupper() and word.isalpha() for word in words[:2]):
        pytest.skip("a template line (PLAN, PROTOCOL)")
    command, rest = resolve(words)
    known = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    flags = {word.split("=")[0] for word in rest if word.startswith("--") and not word[2:3].isupper()}
    assert flags <= known, f"{where}: {line}: unknown {sorted(flags - known)}"
