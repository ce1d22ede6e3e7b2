"""The folder tree is the architecture: each layer imports only the layers below it.

The order is the one ``docs/architecture.md`` draws; a new import that breaks it fails here, so the
picture and the code cannot drift apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and any layer listed before it.
LAYERS = (
    "mote.pipeline.base",  # errors, device, config, progress, the torchvision shim
    "mote.cache_schema",
    "mote.pipeline.video",
    "mote.pipeline.clip",
    "mote.pipeline.data",
    "mote.pipeline.temporal",
    "mote.pipeline.runs",
    "mote.pipeline.extraction",
    "mote.pipeline.train",
    "mote.stages",
)
FOLDERS = {
    "pipeline": "mote.pipeline",
    "stages": "mote.stages",
    "cache_schema": "mote.cache_schema",
}


def _layer(module: str) -> str | None:
    """The layer a ``mote.*`` module belongs to; top-level pipeline modules are the base."""
    for layer in LAYERS[1:]:
        if module == layer or module.startswith(layer + "."):
            return layer
    if module == "mote.pipeline" or module.startswith("mote.pipeline."):
        return "mote.pipeline.base"
    return None


def _sources() -> list[tuple[str, Path]]:
    found = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join((package, *parts)), path))
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``mote.*`` module that ``path`` imports, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mote.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mote."):
            out.append((node.lineno, node.module))
    return out


def test_every_module_is_in_a_layer() -> None:
    sources = _sources()
    assert len(sources) > 30
    assert all(_layer(module) for module, _ in sources)


@pytest.mark.parametrize("module,path", _sources(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_imports_point_down(module: str, path: Path) -> None:
    own = LAYERS.index(_layer(module))
    upward = [
        f"{path.relative_to(REPO)}:{line} imports {target} ({_layer(target)})"
        for line, target in _imports(path)
        if _layer(target) and LAYERS.index(_layer(target)) > own
    ]
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(
        upward
    )


def test_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import of mote.stages from pipeline code is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mote.stages.cli import main\n")
    assert _imports(bad) == [(2, "mote.stages.cli")]
    assert LAYERS.index(_layer("mote.stages.cli")) > LAYERS.index(_layer("mote.pipeline.video.x"))
