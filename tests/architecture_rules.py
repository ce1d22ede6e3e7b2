"""The rules of ``docs/architecture.md`` as functions of a source root.

Every check takes the folder that holds ``pipeline/``, ``stages/`` and ``cache_schema/`` (and
``stages/api/``, the package ``mote`` itself) and returns
one line per violation, so ``test_architecture.py`` can run it on the real tree and on a copy with
one violation written in: a check that never fails on a broken copy proves nothing.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FOLDERS = {
    "mote": "stages/api",  # the Python API: a folder inside stages/, installed as `mote` itself
    "mote.pipeline": "pipeline",
    "mote.stages": "stages",
    "mote.cache_schema": "cache_schema",
}

# Lowest first, as the picture in docs/architecture.md: a module may import its own layer and the
# layers listed before it. An entry ending in ".*" is a package and everything in it; any other
# entry is that one module, so a new top-level pipeline module or subpackage is in no layer until
# someone adds it here (and to the picture).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pipeline (base)",
        (
            "mote.pipeline",  # the package: arms the torchvision shim, __version__
            "mote.pipeline.errors",
            "mote.pipeline.exit_codes",
            "mote.pipeline.device",
            "mote.pipeline.config",
            "mote.pipeline.locations",
            "mote.pipeline.progress",
            "mote.pipeline.safe_load",
            "mote.pipeline.threads",
            "mote.pipeline.spawning",
            "mote.pipeline._torchvision_shim",
            "mote.pipeline.runs.layout",  # run file names, what makes a run: no imports
        ),
    ),
    ("cache_schema", ("mote.cache_schema.*",)),
    ("pipeline.video", ("mote.pipeline.video.*",)),
    ("pipeline.clip", ("mote.pipeline.clip.*",)),
    ("pipeline.data", ("mote.pipeline.data.*",)),
    ("pipeline.temporal", ("mote.pipeline.temporal.*",)),
    ("pipeline.search", ("mote.pipeline.search.*",)),
    ("pipeline.runs", ("mote.pipeline.runs.*",)),
    ("pipeline.extraction", ("mote.pipeline.extraction.*",)),
    ("pipeline.train", ("mote.pipeline.train.*",)),
    ("stages", ("mote.stages.*",)),
    (
        "mote (API)",
        ("mote", "mote.settings", "mote.commands", "mote.trained_run", "mote.store"),
    ),
)

# The stages modules that may import other stages modules, and which (None: any).
STAGE_IMPORTERS: dict[str, tuple[str, ...] | None] = {
    "mote.stages.cli": None,  # the typer app over the command table, plain, faults
    "mote.stages.command_table": None,  # every command's settings, stage (lazily) and printer
    "mote.stages.faults": ("mote.stages.console",),  # prints its lines on console's stderr
    "mote.stages.plain": ("mote.stages.console",),  # the terminal test, the rich bar on one
    "mote.stages.__main__": ("mote.stages.cli",),  # `python -m mote.stages` (torchrun -m)
    "mote.stages.demo": None,  # runs the other stages in order
    "mote.stages.fewshot": ("mote.stages.train_temporal",),  # one training per K and seed
    "mote.stages.search": ("mote.stages.embed", "mote.stages.predict"),  # --store, --video
}

# Imports only some modules may make: the longest matching name decides.
ONLY_IN: dict[str, tuple[str, ...]] = {
    "zarr": ("mote.cache_schema.*",),  # the store contract is the only code that knows zarr
    "numcodecs": ("mote.cache_schema.*",),
    "mote.cache_schema.v1": ("mote.cache_schema.*",),  # layout and status codes: masks outside
    "rich": ("mote.stages.console",),  # its two Consoles are the only terminal writers
    "rich.text": ("mote.stages.console", "mote.stages.faults"),  # faults' lines, printed by console
}

# Modules that must load without torch or zarr: decode_pool, all a decode worker process imports
# (a fresh interpreter, never the caller's __main__), and the `mote` console script's module, so
# `mote --help` and every command's start need not wait for torch.
WORKER_MODULES = ("mote.pipeline.video.decode_pool", "mote.stages.cli")
WORKER_FORBIDDEN = ("torch", "zarr")
# Every command's settings (stages/configs/): all that `mote X --help` loads besides stages.cli.
HELP_PACKAGE = "mote.stages.configs"
HELP_FORBIDDEN = ("torch", "open_clip", "zarr", "torchvision")


@dataclass(frozen=True)
class Source:
    module: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # an absolute name: a mote module, or a third-party name (``rich.table.Table``)
    lazy: bool  # in a function or under ``if TYPE_CHECKING:``: not run when the module loads
    name: str | None = None  # ``from mote.x import name`` of no submodule: a name mote.x binds


def sources(root: Path) -> list[Source]:
    """Every module under the folders, named as installed (``stages/api/`` as ``mote``, not as
    ``mote.stages.api``)."""
    found = []
    for package, folder in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            if _package_of(root, path) != package:
                continue
            parts = path.relative_to(root / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_package else parts)))
            found.append(Source(name, path, is_package))
    return found


def _package_of(root: Path, path: Path) -> str:
    """The FOLDERS package a file belongs to: the one whose folder is its deepest ancestor."""
    owners = [p for p, folder in FOLDERS.items() if path.is_relative_to(root / folder)]
    return max(owners, key=lambda p: len(Path(FOLDERS[p]).parts))


def module_file(root: Path, name: str) -> Path | None:
    """The file that defines mote module ``name`` in this tree, or None when there is none."""
    packages = [p for p in FOLDERS if name == p or name.startswith(p + ".")]
    if not packages:
        return None
    package = max(packages, key=len)
    base = root / FOLDERS[package] / Path(*name.split(".")[package.count(".") + 1 :])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file() and _package_of(root, path) == package:
            return path
    return None


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the layer that lists ``module``, or None when none does."""
    for index, (_, entries) in enumerate(LAYERS):
        if any(_matches(module, entry) for entry in entries):
            return index
    return None


def _matches(module: str, entry: str) -> bool:
    if entry.endswith(".*"):
        return module == entry[:-2] or module.startswith(entry[:-1])
    return module == entry


def imports(root: Path, source: Source) -> tuple[list[Import], list[str]]:
    """What ``source`` imports, each name resolved to the module it really names, and problems.

    ``from mote import stages`` is ``mote.stages``; ``from mote.pipeline import train`` is the
    subpackage when a file defines it, else an attribute of ``mote.pipeline``; relative names and
    ``importlib.import_module`` literals are resolved against the importing module's package.
    """
    package = source.module if source.is_package else source.module.rpartition(".")[0]
    where = f"{source.path.relative_to(root)}"
    found: list[Import] = []
    problems: list[str] = []
    for node, lazy in _import_nodes(source.path.read_text()):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):
                problems.append(f"{where}:{node.lineno}: relative import above the mote packages")
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                mote_module = _is_mote(base) and module_file(root, sub) is not None
                target = sub if alias.name != "*" and (mote_module or not _is_mote(base)) else base
                name = alias.name if target == base and alias.name != "*" else None
                found.append(Import(node.lineno, target, lazy, name))
        elif isinstance(node, ast.Call) and _call_name(node) in ("import_module", "__import__"):
            name = _literal(node.args[0]) if node.args else None
            if name is None:
                problems.append(f"{where}:{node.lineno}: dynamic import the checker cannot follow")
                continue
            anchor = package if _names_package(node) else _package_literal(node)
            try:
                found.append(Import(node.lineno, importlib.util.resolve_name(name, anchor), lazy))
            except (ImportError, ValueError):
                problems.append(f"{where}:{node.lineno}: import_module({name!r}) has no package")
    return found, problems


@functools.cache
def _import_nodes(code: str) -> tuple[tuple[ast.AST, bool], ...]:
    """The import statements and import calls of ``code`` with ``_walk``'s lazy flag, parsed
    once per text: the checks and their tests' copies of the tree read the same files often."""
    return tuple(
        (node, lazy)
        for node, lazy in _walk(ast.parse(code), False)
        if isinstance(node, ast.Import | ast.ImportFrom)
        or (isinstance(node, ast.Call) and _call_name(node) in ("import_module", "__import__"))
    )


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it runs later than the module body (functions, TYPE_CHECKING)."""
    deferred = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    guarded = isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING
    for child in ast.iter_child_nodes(node):
        inner = lazy or deferred or (guarded and child in node.body)
        yield child, inner
        yield from _walk(child, inner)


TYPE_CHECKING = ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else None


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _package_literal(node: ast.Call) -> str | None:
    """The literal package of ``import_module(name, "mote.x")`` or ``package="mote.x"``."""
    if _call_name(node) != "import_module":
        return None  # __import__'s second argument is globals()
    args = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "package")]
    return next((_literal(a) for a in args if _literal(a) is not None), None)


def _names_package(node: ast.Call) -> bool:
    """``import_module(name, __package__)``: the anchor is the importing module's package."""
    args = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "package")]
    return any(isinstance(a, ast.Name) and a.id == "__package__" for a in args)


def _is_mote(name: str) -> bool:
    return name == "mote" or name.startswith("mote.")


def _all_imports(root: Path) -> Iterator[tuple[Source, Import]]:
    for source in sources(root):
        for item in imports(root, source)[0]:
            yield source, item


def _at(root: Path, source: Source, item: Import) -> str:
    return f"{source.path.relative_to(root)}:{item.line}"


def check_layer_table(root: Path) -> list[str]:
    """Every module is listed in LAYERS, so a new subpackage cannot become 'base' silently."""
    return [
        f"{s.path.relative_to(root)} ({s.module}) is in no layer: add it to LAYERS in "
        "tests/architecture_rules.py and to the picture in docs/architecture.md"
        for s in sources(root)
        if layer_of(s.module) is None
    ]


def check_imports_resolve(root: Path) -> list[str]:
    """Every mote name imported is a module of this tree, and every import can be followed."""
    problems = [p for s in sources(root) for p in imports(root, s)[1]]
    for source, item in _all_imports(root):
        if _is_mote(item.target) and module_file(root, item.target) is None:
            problems.append(f"{_at(root, source, item)}: imports {item.target}, no module here")
        elif _is_mote(item.target) and item.name and not _binds(root, item.target, item.name):
            where = _at(root, source, item)
            problems.append(f"{where}: imports {item.target}.{item.name}, no module here")
    return problems


def _binds(root: Path, module: str, name: str) -> bool:
    """Whether mote ``module`` defines ``name`` at its top level (a def, a class, an assignment
    or an import, also under ``if`` and ``try``), or may (a module ``__getattr__``, a ``*``)."""
    path = module_file(root, module)
    if path is None:
        return False
    bound = _bound_names(path.read_text())
    return name in bound or "__getattr__" in bound or "*" in bound


@functools.cache
def _bound_names(code: str) -> frozenset[str]:
    """The names a module's code binds at its top level (``_binds``), once per text."""
    bound: set[str] = set()
    todo = list(ast.parse(code).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", ())]
            todo += [line for handler in getattr(node, "handlers", ()) for line in handler.body]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return frozenset(bound)


def check_layer_order(root: Path) -> list[str]:
    """Each module imports only its own layer and the layers above it in the picture."""
    problems = []
    for source, item in _all_imports(root):
        own, theirs = layer_of(source.module), layer_of(item.target)
        if _is_mote(item.target) and own is not None and theirs is not None and theirs > own:
            problems.append(
                f"{_at(root, source, item)}: {source.module} ({LAYERS[own][0]}) imports "
                f"{item.target} ({LAYERS[theirs][0]}), a lower layer in docs/architecture.md"
            )
    return problems


def check_stage_imports(root: Path) -> list[str]:
    """Stages do not import each other, except the importers in STAGE_IMPORTERS."""
    problems = []
    for source, item in _all_imports(root):
        if not (
            _matches(source.module, "mote.stages.*") and item.target.startswith("mote.stages.")
        ):
            continue
        if _matches(item.target, HELP_PACKAGE + ".*"):
            continue  # settings sit below every command; configs/ itself imports no command
        allowed = STAGE_IMPORTERS.get(source.module, ())
        if allowed is not None and item.target not in allowed:
            problems.append(
                f"{_at(root, source, item)}: {source.module} imports {item.target}; a helper two "
                "stages need moves to pipeline/ (exceptions: STAGE_IMPORTERS)"
            )
    return problems


def check_only_in(root: Path) -> list[str]:
    """zarr, numcodecs, the store layout and rich are imported only where ONLY_IN says."""
    problems = []
    for source, item in _all_imports(root):
        keys = [k for k in ONLY_IN if item.target == k or item.target.startswith(k + ".")]
        if keys:
            allowed = ONLY_IN[max(keys, key=len)]
            if not any(_matches(source.module, entry) for entry in allowed):
                problems.append(
                    f"{_at(root, source, item)}: {source.module} imports {item.target}; only "
                    f"{', '.join(allowed)} may"
                )
    return problems


def check_worker_closure(root: Path) -> list[str]:
    """What a decode worker loads (module-level imports, followed through mote) has no torch."""
    return _heavy_loads(root, WORKER_MODULES, WORKER_FORBIDDEN, "decode worker")


def help_modules(root: Path) -> tuple[str, ...]:
    """The settings modules of every command (what ``--help`` builds its options from)."""
    return tuple(s.module for s in sources(root) if _matches(s.module, HELP_PACKAGE + ".*"))


def check_help_closure(root: Path) -> list[str]:
    """What a command's settings load (module-level imports, followed through mote) has no torch,
    open_clip or zarr, so its ``--help`` is quick."""
    return _heavy_loads(root, help_modules(root), HELP_FORBIDDEN, "--help")


def _heavy_loads(
    root: Path, starts: tuple[str, ...], forbidden: tuple[str, ...], what: str
) -> list[str]:
    """Each module-level import of ``forbidden`` reached from ``starts``, with its chain."""
    by_name = {s.module: s for s in sources(root)}
    chains = {name: (name,) for start in starts for name in _with_parents(start)}
    todo, problems = list(chains), []
    while todo:
        source = by_name.get(todo.pop())
        if source is None:
            continue
        for item in imports(root, source)[0]:
            if item.lazy:
                continue
            if item.target.split(".")[0] in forbidden:
                chain = " -> ".join(chains[source.module])
                problems.append(f"{_at(root, source, item)}: {what} loads {item.target} ({chain})")
            for name in _with_parents(item.target) if _is_mote(item.target) else ():
                if name not in chains:
                    chains[name] = (*chains[source.module], name)
                    todo.append(name)
    return problems


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]


_LOAD = """
import importlib.abc, importlib.util, json, sys
root, folders, names = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]

class Tree(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in folders:
            return None
        where = f"{root}/{folders[name]}"
        return importlib.util.spec_from_file_location(
            name, f"{where}/__init__.py", submodule_search_locations=[where])

sys.meta_path.insert(0, Tree())
for name in names:
    assert importlib.import_module(name).__file__.startswith(root), name
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(root: Path, names: tuple[str, ...]) -> set[str]:
    """``sys.modules`` of a fresh interpreter that imported ``names`` from this tree."""
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, str(root), json.dumps(FOLDERS), *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {names} from {root} failed:\n{result.stderr}")
    return set(json.loads(result.stdout))


def check_worker_runtime(root: Path) -> list[str]:
    """The same rule, measured: third-party packages that pull torch in count too."""
    loaded = loaded_modules(root, WORKER_MODULES)
    return [
        f"importing {', '.join(WORKER_MODULES)} loads {name}: decode workers never import it"
        for name in WORKER_FORBIDDEN
        if name in loaded
    ]


def check_help_runtime(root: Path) -> list[str]:
    """The settings rule, measured: packages that pull torch in count too."""
    loaded = loaded_modules(root, help_modules(root))
    return [
        f"importing the settings modules loads {name}: --help never imports it"
        for name in HELP_FORBIDDEN
        if name in loaded
    ]


STATIC_CHECKS = (
    check_layer_table,
    check_imports_resolve,
    check_layer_order,
    check_stage_imports,
    check_only_in,
    check_worker_closure,
    check_help_closure,
)
