"""Every command block of the README runs in a fresh clone (issue 24, item 3).

The working tree's committed state is cloned into a temporary folder and each indented command
block of the README is run there with bash, after the README's own setup, and must exit 0. The
setup's venv is this one reused rather than reinstalled: a venv made in the clone sees this
venv's packages and imports spinlab from the clone. ``SPINLAB_FSDD`` points at the shared FSDD
copy (so `spinlab data fetch fsdd` checks it offline), the caches are the test's own.

A long-running block is marked in the README by comment lines just above it, which this test
obeys (the page does not show them):

    <!-- readme-test: replace "OLD" with "NEW" -->        run it with smaller limits
    <!-- readme-test: line by line; skip lines with "A", "B" (why) -->
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_readme import code_lines

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"
MARK = re.compile(r"^<!-- readme-test: (.*) -->$")
#: the README's setup, with this venv reused: no venv to create, nothing to install
REUSE = [
    (re.compile(r"python3 -m venv \.venv"), "true"),
    (re.compile(r"\.venv/bin/pip install [^&]*"), "true"),
]


def readme_blocks(text: str) -> list[tuple[list[str], list[str]]]:
    """``(directives, command lines)`` of each indented block, the directives from the
    ``readme-test`` comment lines right above it."""
    blocks, marks, block = [], [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("    "):
            block.append(line)
            continue
        if block:
            blocks.append((marks, code_lines("\n".join(block))))
            marks, block = [], []
        found = MARK.match(line.strip())
        if found:
            marks.append(found[1])
        elif line.strip():
            marks = []
    return blocks


def commands(marks: list[str], lines: list[str]) -> list[str]:
    """What to run for one block: the whole block as one script, or its lines one by one."""
    for mark in marks:
        for old, new in re.findall(r'replace "([^"]+)" with "([^"]+)"', mark):
            lines = [line.replace(old, new) for line in lines]
    if not any(m.startswith("line by line") for m in marks):
        return ["\n".join(lines)]
    skip = [s for m in marks if m.startswith("line by line") for s in re.findall(r'"([^"]+)"', m)]
    return [line for line in lines if not any(s in line for s in skip)]


def reuse_venv(clone: Path) -> None:
    """``clone/.venv``: sees this venv's packages, imports spinlab from the clone."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "reuse-outer-venv.pth").write_text(f"{ours}\n")
    finder = next(ours.glob("__editable___spinlab_*_finder.py")).read_text()
    mapping = {"spinlab": "spinlab", "spinlab.instruments": "instruments"}
    mapping |= {"spinlab.protocols": "protocols", "spinlab.sim_backends": "sim_backends"}
    finder = re.sub(
        r"MAPPING: dict\[str, str\] = \{[^}]*\}",
        "MAPPING: dict[str, str] = " + repr({k: str(clone / v) for k, v in mapping.items()}),
        finder,
    )
    (site / "spinlab_clone_finder.py").write_text(finder)
    (site / "spinlab-clone.pth").write_text("import spinlab_clone_finder; spinlab_clone_finder.install()\n")
    # as pip writes it: the guard matters, a sweep's Dask workers import the main module again
    script = f"#!{venv}/bin/python\nimport sys\nfrom spinlab.cli import main\n\n"
    script += "if __name__ == '__main__':\n    sys.exit(main())\n"
    (venv / "bin" / "spinlab").write_text(script)
    (venv / "bin" / "spinlab").chmod(0o755)


@pytest.mark.slow  # minutes: a tiny demo, a few runs and the README's test file, in a clone
def test_every_readme_command_block_runs_in_a_fresh_clone(tmp_path):
    if not FSDD.is_dir():
        pytest.skip(f"no shared FSDD copy at {FSDD}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    reuse_venv(clone)
    env = {
        **os.environ,
        "SPINLAB_FSDD": str(FSDD.resolve()),
        "SPINLAB_CACHE": str(tmp_path / "cache"),
        "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
    }
    env.pop("VIRTUAL_ENV", None)
    blocks = readme_blocks((clone / "README.md").read_text())
    assert len(blocks) >= 3 and all(lines for _, lines in blocks)
    ran = []
    for marks, lines in blocks:
        for script in commands(marks, lines):
            for pattern, replacement in REUSE:
                script = pattern.sub(replacement, script)
            done = subprocess.run(
                ["bash", "-e", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1800
            )
            assert done.returncode == 0, (
                f"{script}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            ran.append(script)
    assert any("spinlab demo --limit 20" in s for s in ran) and any("sweep characterize" in s for s in ran)
    # the clone's code ran, not this checkout's
    assert list((clone / "runs").glob("*-demo-*")), sorted(p.name for p in clone.iterdir())
