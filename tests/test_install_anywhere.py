"""The README's install resolves where pip sees only the public package index.

This machine's pip also reads a local wheel folder (the CPU build of torch); a user's does not.
A pin that only such a folder holds (``torch==2.13.0+cpu``) once made the README's first command
fail everywhere else. Here the README's own pip arguments are resolved with pip's settings
switched off (no config file, no ``PIP_*`` variables, an empty home), metadata only
(``--dry-run``), so such a pin fails this test before it can land.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import tomllib
from architecture_rules import sources
from test_readme import REPO, fenced_bash_blocks

# The pins that decide what a user's machine installs and that a local folder could shadow.
DECISIVE = ("torch", "torchvision", "open-clip-torch", "decord2")
NETWORK = (
    "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
    "PIP_CERT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_DEFAULT_TIMEOUT",
)  # fmt: skip


def readme_pip_arguments() -> list[str]:
    """What the README's install block passes to ``pip install``."""
    install = fenced_bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))[0]
    pip = next(shlex.split(step) for step in install.split("&&") if "pip install" in step)
    return pip[2:]


def public_index_environment(home: os.PathLike) -> dict[str, str]:
    """The environment of a fresh machine: no pip config, no extra indexes or wheel folders.
    The network settings (proxies, the machine's certificates) stay: they say how to reach the
    index, not where else to look."""
    keep = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    for name in NETWORK:
        if name in os.environ:
            keep[name] = os.environ[name]
    return {**keep, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.mark.slow
def test_the_readme_install_resolves_on_the_public_index_alone(tmp_path) -> None:
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), *readme_pip_arguments(),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=public_index_environment(tmp_path), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"the README's install does not resolve:\n{done.stderr[-3000:]}"
    chosen = {
        item["metadata"]["name"].lower().replace("_", "-"): item
        for item in json.loads(report.read_text())["install"]
    }
    for name in DECISIVE:
        where = chosen[name]["download_info"]["url"]
        assert where.startswith("https://"), f"{name} would come from {where}, not the index"
    # What a user's pip gets is the public build of the pinned torch (a CUDA build on Linux).
    pins = (REPO / "constraints-cpu.txt").read_text().split()
    torch_pin = next(p for p in pins if p.startswith("torch=="))
    assert chosen["torch"]["metadata"]["version"] == torch_pin.removeprefix("torch==")
    assert "mote" in chosen and chosen["mote"]["metadata"]["version"]


def test_every_package_of_the_tree_is_installed() -> None:
    """pyproject lists its packages by name: a new folder with an ``__init__.py`` missing there
    works in an editable install and the tests, and is absent from a user's wheel."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {source.module for source in sources(REPO) if source.is_package}
    assert found == listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
