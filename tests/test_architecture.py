"""The rules of ``docs/architecture.md`` hold for the code, and each check can fail.

The checks live in ``architecture_rules.py`` as functions of a source root. The first tests run
them on this repository; the rest write one violation into a copy of the tree and demand that the
right check reports it, so a checker that has gone blind fails here too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from architecture_rules import (
    HELP_FORBIDDEN,
    LAYERS,
    STATIC_CHECKS,
    Source,
    check_help_closure,
    check_help_runtime,
    check_imports_resolve,
    check_layer_order,
    check_layer_table,
    check_only_in,
    check_stage_imports,
    check_worker_closure,
    check_worker_runtime,
    imports,
    layer_of,
    sources,
)

REPO = Path(__file__).resolve().parents[1]
Check = Callable[[Path], list[str]]


def test_the_tree_is_found() -> None:
    names = {s.module for s in sources(REPO)}
    assert len(names) > 30
    assert {"mote.pipeline", "mote.pipeline.train.train_settings", "mote.stages.cli"} <= names
    assert {"mote", "mote.commands"} <= names and not any(".stages.api" in n for n in names)


@pytest.mark.parametrize("check", STATIC_CHECKS, ids=lambda c: c.__name__)
def test_the_code_keeps_the_rule(check: Check) -> None:
    problems = check(REPO)
    assert not problems, f"{check.__doc__}\n" + "\n".join(problems)


def test_decode_workers_load_no_torch() -> None:
    assert check_worker_runtime(REPO) == []


def test_settings_modules_load_no_torch() -> None:
    assert check_help_runtime(REPO) == []


HELP_OF_EVERY_COMMAND = """
import sys, click, typer
from mote.stages.cli import BUILDERS, app
group = typer.main.get_command(app)
for name in BUILDERS:
    command = group.get_command(click.Context(group), name)
    assert "--help" in command.get_help(click.Context(command, info_name=name)), name
print(len(BUILDERS), *sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]))
"""


def test_every_commands_help_loads_no_torch() -> None:
    """Every command built and its help written, in one interpreter: none of the heavy
    packages is loaded (what ``mote X --help`` costs is Python, typer and rich)."""
    done = subprocess.run(
        [sys.executable, "-c", HELP_OF_EVERY_COMMAND, *HELP_FORBIDDEN],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    count, *loaded = done.stdout.split()
    assert int(count) >= 13 and loaded == []


def test_the_picture_draws_the_layers_in_order() -> None:
    """The layer names down the left of the picture are LAYERS, in the same order."""
    text = (REPO / "docs" / "architecture.md").read_text()
    picture = text.split("## Layers", 1)[1].split("```")[1]
    drawn = [line[:20].strip() for line in picture.splitlines() if line[:20].strip() not in "|"]
    assert drawn == [name for name, _ in LAYERS]


def test_the_picture_lists_every_module_of_its_layer() -> None:
    """Each layer's lines in the picture name exactly its module files (a stage may be named
    without ``.py``; package ``__init__`` files only in the base layer)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    picture = text.split("## Layers", 1)[1].split("```")[1]
    drawn: dict[str, set[str]] = {}
    layer = ""
    for line in picture.splitlines():
        name = line[:20].strip()
        if name == "|" or not line.strip():
            continue
        layer = name or layer
        words = re.findall(r"[A-Za-z_0-9]+(?:\.py)?", line[20:])
        drawn.setdefault(layer, set()).update(w.removesuffix(".py") for w in words)
    problems = []
    for source in sources(REPO):
        index = layer_of(source.module)
        if index is None or (source.is_package and index != 0):
            continue
        name, stem = LAYERS[index][0], source.path.stem
        if stem not in drawn.get(name, set()):
            problems.append(f"{source.path.relative_to(REPO)} is missing from '{name}'")
    assert not problems, "update the picture in docs/architecture.md:\n" + "\n".join(problems)


# The test of the test: one violation in a copy of the tree, and the check that must see it.


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the three source folders (Python files only)."""
    for folder in ("pipeline", "stages", "cache_schema"):
        shutil.copytree(
            REPO / folder,
            tmp_path / folder,
            ignore=lambda _, names: [n for n in names if n == "__pycache__" or _data(n)],
        )
    return tmp_path


def _data(name: str) -> bool:
    return "." in name and not name.endswith(".py")


def _write(tree: Path, relative: str, code: str) -> None:
    """Add ``code`` to the end of a file of the copy (a new file when it does not exist)."""
    path = tree / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    path.write_text(old + "\n" + code + "\n")


def _reports(check: Check, tree: Path, *needles: str) -> None:
    problems = check(tree)
    assert any(all(n in p for n in needles) for p in problems), problems


def test_the_copy_passes(tree: Path) -> None:
    assert [p for check in STATIC_CHECKS for p in check(tree)] == []


UPWARD = {
    "absolute": ("import mote.pipeline.train.loop", "mote.pipeline.train.loop"),
    "from mote import stages": ("from mote import stages", "mote.stages (stages)"),
    "subpackage by from": ("from mote.pipeline import train", "mote.pipeline.train (pipeline."),
    "relative": ("from ..train import loop", "mote.pipeline.train.loop"),
    "relative package": ("from .. import train", "mote.pipeline.train (pipeline.train)"),
    "lazy relative": ("def f():\n    from ...stages import cli", "mote.stages.cli"),
    "import_module": ("import importlib\nimportlib.import_module('mote.stages.cli')", "stages.cli"),
    "import_module relative": (
        "from importlib import import_module\nimport_module('..train.step', 'mote.pipeline.video')",
        "mote.pipeline.train.step",
    ),
    "the API": ("import mote", "imports mote (mote (API))"),
    "import_module package=": (
        "import importlib\nimportlib.import_module('.cli', package='mote.stages')",
        "mote.stages.cli",
    ),
}


@pytest.mark.parametrize("code,target", UPWARD.values(), ids=UPWARD.keys())
def test_an_upward_import_is_seen(tree: Path, code: str, target: str) -> None:
    _write(tree, "pipeline/video/bad.py", code)
    _reports(check_layer_order, tree, "pipeline/video/bad.py", target)


def test_from_dot_in_a_base_module_is_seen(tree: Path) -> None:
    _write(tree, "pipeline/errors.py", "from . import video")
    _reports(check_layer_order, tree, "pipeline/errors.py", "imports mote.pipeline.video")


def test_relative_names_resolve_against_the_package(tree: Path) -> None:
    _write(tree, "pipeline/video/__init__.py", "from . import decode\nfrom .sampling import x")
    init = Source("mote.pipeline.video", tree / "pipeline/video/__init__.py", True)
    found, problems = imports(tree, init)
    assert [i.target for i in found] == [
        "mote.pipeline.video.decode",
        "mote.pipeline.video.sampling",
    ]
    assert problems == []


@pytest.mark.parametrize(
    "code",
    [
        "import mote.pipeline.vidoe.decode",
        "from mote.pipeline.vidoe import decode",
        "import mote.stages.api",  # that folder is the package `mote`, never `mote.stages.api`
        "from . import _nope_module_",  # neither a module of pipeline/video/ nor a name it binds
        "from mote.pipeline.video import _nope_module_",
        "from mote.pipeline.errors import _NopeError",
    ],
)
def test_an_unknown_module_is_seen(tree: Path, code: str) -> None:
    _write(tree, "pipeline/video/bad.py", code)
    _reports(check_imports_resolve, tree, "pipeline/video/bad.py", "no module here")


@pytest.mark.parametrize(
    "code", ["import importlib\nname = 'x'\nimportlib.import_module(name)", "from .... import x"]
)
def test_an_import_the_checker_cannot_follow_is_seen(tree: Path, code: str) -> None:
    _write(tree, "pipeline/video/bad.py", code)
    _reports(check_imports_resolve, tree, "pipeline/video/bad.py")


@pytest.mark.parametrize("relative", ["pipeline/helpers.py", "pipeline/newpkg/__init__.py"])
def test_a_module_outside_the_layer_table_is_seen(tree: Path, relative: str) -> None:
    _write(tree, relative, "")
    _reports(check_layer_table, tree, relative, "add it to LAYERS")


@pytest.mark.parametrize(
    "relative,code",
    [
        ("stages/evaluate.py", "from mote.stages import zeroshot"),
        ("stages/extract.py", "from . import console"),
        ("stages/fewshot.py", "from mote.stages import evaluate"),
        ("stages/__init__.py", "from . import cli"),
    ],
)
def test_a_stage_importing_a_stage_is_seen(tree: Path, relative: str, code: str) -> None:
    _write(tree, relative, code)
    _reports(check_stage_imports, tree, relative)


@pytest.mark.parametrize(
    "relative,code",
    [
        ("pipeline/temporal/features.py", "def f():\n    import zarr"),
        ("stages/extract.py", "from numcodecs import Zstd"),
        ("stages/info.py", "from mote.cache_schema.v1 import DONE"),
        ("pipeline/progress.py", "from rich.progress import Progress as Bar"),
        ("stages/cli.py", "from rich.console import Console"),
        ("stages/cli.py", "from rich import print"),
        ("stages/extract.py", "from rich.table import Table"),
    ],
)
def test_a_guarded_import_outside_its_place_is_seen(tree: Path, relative: str, code: str) -> None:
    _write(tree, relative, code)
    _reports(check_only_in, tree, relative)


def test_torch_in_the_decode_worker_is_seen(tree: Path) -> None:
    _write(tree, "pipeline/video/helper.py", "import torch")
    _write(tree, "pipeline/video/sampling.py", "from mote.pipeline.video import helper")
    _reports(
        check_worker_closure, tree, "pipeline/video/helper.py", "-> mote.pipeline.video.helper"
    )
    assert check_worker_runtime(tree) == [
        "importing mote.pipeline.video.decode_pool, mote.stages.cli loads torch: "
        "decode workers never import it"
    ]


def test_torch_in_a_commands_settings_is_seen(tree: Path) -> None:
    _write(tree, "pipeline/train/precisions.py", "from mote.pipeline.train import step")
    _reports(
        check_help_closure, tree, "pipeline/train/step.py", "--help loads torch",
        "-> mote.pipeline.train.precisions -> mote.pipeline.train.step",
    )  # fmt: skip
    assert "loads torch" in check_help_runtime(tree)[0]


def test_settings_importing_a_command_is_seen(tree: Path) -> None:
    _write(tree, "stages/configs/info_config.py", "from mote.stages import info")
    _reports(check_stage_imports, tree, "stages/configs/info_config.py", "mote.stages.info")


def test_torch_in_the_api_package_is_seen(tree: Path) -> None:
    """A decode worker imports the package ``mote`` first: ``import mote`` must stay light."""
    _write(tree, "stages/api/store.py", "from mote.stages import extract")
    _reports(check_worker_closure, tree, "stages/extract.py", "mote -> mote.store -> mote.stages")
    assert "torch" in check_worker_runtime(tree)[0]


def test_torch_imported_later_is_not_a_worker_import(tree: Path) -> None:
    """A lazy import (what transforms.normalize does) runs only where it is called."""
    _write(tree, "pipeline/video/decode.py", "def f():\n    import torch")
    _write(tree, "pipeline/video/sampling.py", "if TYPE_CHECKING:\n    import torch")
    assert check_worker_closure(tree) == []
    _write(tree, "pipeline/video/sampling.py", "if not TYPE_CHECKING:\n    import zarr")
    _reports(check_worker_closure, tree, "pipeline/video/sampling.py", "loads zarr")
