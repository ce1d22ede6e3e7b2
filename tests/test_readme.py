"""The README's first two commands are what a new user types: keep them what CI really runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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
