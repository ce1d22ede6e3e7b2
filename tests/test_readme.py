"""The README's first two commands are what a new user types: keep them what CI really runs; its
Python example runs as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fenced_bash_blocks(text: str) -> list[str]:
    """The bodies of the ```bash blocks, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^```bash\n(.*?)^```", text, re.M | re.S)]


def ci_commands() -> list[str]:
    """The command lines of .ci/run, without comments and blank lines."""
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    blocks = fenced_bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "README.md needs the install block and the test block near the top"
    test_command = blocks[1]
    assert "\n" not in test_command, "the README's test block should be one command"
    assert test_command in ci_commands(), f".ci/run does not run {test_command!r}"
    # It must be the last thing CI does, so the exit status of CI is the suite's.
    assert ci_commands()[-1] == test_command
    words = shlex.split(test_command)
    assert words[:4] == ["HF_HUB_OFFLINE=1", "python", "-m", "pytest"]


def test_the_readme_install_block_installs_this_repo_and_runs_the_demo() -> None:
    install = fenced_bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))[0]
    steps = [step.strip() for step in install.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate"
    pip = shlex.split(steps[2])
    assert pip[:2] == ["pip", "install"] and ".[test]" in [w.removeprefix("-e") for w in pip]
    assert pip[pip.index("-c") + 1] == "constraints-cpu.txt"
    assert (REPO / "constraints-cpu.txt").is_file()
    assert steps[-1] == "mote demo"
    # CI installs the same extras with the same constraints file, into a fresh venv.
    ci_pip = next(shlex.split(c) for c in ci_commands() if c.startswith("pip install"))
    assert ".[test]" in ci_pip and ci_pip[ci_pip.index("-c") + 1] == "constraints-cpu.txt"


def python_example() -> str:
    """The ```python block of the README's "From Python" section."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## From Python", 1)[1]
    return re.search(r"^```python\n(.*?)^```", section, re.M | re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_a_script_on_stdin(tmp_path) -> None:
    """Verbatim, through ``python -``: decode workers must not need a main file."""
    done = subprocess.run(
        [sys.executable, "-"], input=python_example(), capture_output=True, text=True,
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 6 and lines[4] == "24 videos in the store"
    assert lines[5].startswith("(24, ") and " vectors; " in lines[5]
    assert all(" -> " in line and "mote-py/new/" in line for line in lines[:3])
    # it learns: top-1 on 24 videos it never saw, well above chance (8 classes: 12.5%);
    # measured 50.0
    prefix, suffix = "top-1 on 24 new videos: ", " (chance 12.5)"
    assert lines[3].startswith(prefix) and lines[3].endswith(suffix), lines[3]
    assert float(lines[3].removeprefix(prefix).removesuffix(suffix)) >= 12.5 + 20
    assert (tmp_path / "mote-py" / "run" / "model.safetensors").is_file()
