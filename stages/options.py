"""CLI options derived from config dataclasses, so a setting's default and help live in one place.

A config field becomes a flag by carrying help text in its metadata (``setting`` in
pipeline/config.py, ``switch`` in pipeline/temporal/temporal_config.py). ``config_parameters`` turns
those fields into typer options; ``default_help`` writes the ``[default: X]`` of any option
from the dataclass default, or from a ``default_text`` callable in the metadata for defaults
that depend on the data (per-width sizes).

Metadata keys: ``help`` (required to be an option), ``flag`` (the option name when it is not
``--field-name``), ``aliases`` (old names: each a second flag and a ``--config`` key),
``argument`` (positional; ``metavar`` names it; a tuple field takes one or more), ``multiple`` (a
tuple given by repeating the option, not as comma text), ``default_text`` (the default's
description, or a zero-argument callable giving it), ``panel`` (the --help panel it is listed
in; default: Options), ``nested`` (a config dataclass field filled
from that class's options, less the names in ``fixed``). ``config_command`` makes a whole command:
those options, ``--json`` and ``--config``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from mote.pipeline.config import build_config, option_fields
from mote.pipeline.errors import ConfigError

MISSING = dataclasses.MISSING


def format_default(value: Any) -> str | None:
    """How a default reads in ``--help``: on/off, comma lists, plain numbers; None for none."""
    if value is None or value is MISSING or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(format_default(v) or "" for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_default_text(f: dataclasses.Field) -> str | None:
    """The default of a dataclass field as help text: the ``default_text`` callable, else the
    field's default (or factory's value)."""
    describe = f.metadata.get("default_text")
    if describe is not None:
        text = describe() if callable(describe) else describe
        return text if isinstance(text, str) else format_default(text)
    if f.default is not MISSING:
        return format_default(f.default)
    if f.default_factory is not MISSING:
        return format_default(f.default_factory())
    return None


def with_default(help: str, text: str | None) -> str:
    """``help [default: text]``, the bracket escaped so typer's rich markup shows it."""
    return help if text is None else f"{help} \\[default: {text}]".strip()


def default_help(cls: type, name: str, help: str = "") -> str:
    """``help`` plus ``[default: X]`` taken from field ``name`` of config dataclass ``cls``."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    text = field_default_text(f)
    if f.default is MISSING and f.default_factory is MISSING and text is None:
        return f"{help} \\[required]".strip()
    return with_default(help, text)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def parse_tuple(text: str, annotation: Any, option: str) -> tuple:
    """'1,0.5,0.1' -> (1.0, 0.5, 0.1) for ``tuple[float, float, float]`` or ``tuple[int, ...]``."""
    args = typing.get_args(annotation)
    variadic = len(args) == 2 and args[1] is Ellipsis
    kind = args[0] if args else str
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or (not variadic and len(values) != len(args)):
        count = "" if variadic else f"{len(args)} "
        raise ConfigError(
            f"{option} '{text}': expected {count}comma-separated {kind.__name__} values"
        )
    return values


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


# How --help names a path option's value: a local path, or a path or URL it reads.
_PATH_METAVARS = {None: "<path>", "write": "<path>", "read": "<path|url>", "store": "<path|url>"}


def _parameter(f: dataclasses.Field, kind: Any, cls: type) -> inspect.Parameter:
    """The typer parameter of one option field (default None: "not given")."""
    meta = f.metadata
    keyword = inspect.Parameter.KEYWORD_ONLY
    repeated = typing.get_origin(kind) is tuple and (meta.get("argument") or meta.get("multiple"))
    if repeated:
        kind = list[typing.get_args(kind)[0]]
    path = kind is Path or kind == list[Path] or meta.get("url") is not None
    if path:  # text, so a URL reaches ``locate`` whole
        kind = list[str] if repeated else str
    if meta.get("argument"):
        argument = typer.Argument(metavar=meta.get("metavar"), help=meta["help"])
        if meta.get("optional"):  # may be left out: the command checks what else was given
            return inspect.Parameter(
                f.name, keyword, default=None, annotation=Annotated[kind | None, argument]
            )
        return inspect.Parameter(f.name, keyword, annotation=Annotated[kind, argument])
    flag = flag_of(f)
    names = [flag, *("--" + a.replace("_", "-") for a in meta.get("aliases", ()))]
    if meta.get("short"):  # a one-letter form, listed first as help shows it: -k, --top-k
        names.insert(0, meta["short"])
    if kind is bool and f.default is True:
        names = [f"{flag}/--no-{flag[2:]}"]
    elif typing.get_origin(kind) is tuple or (not repeated and kind not in (bool, int, float)):
        kind = str  # comma text for tuples (``parse_tuple``)
    help = default_help(cls, f.name, meta["help"])
    metavar = _PATH_METAVARS.get(meta.get("url")) if path else None
    option = typer.Option(*names, help=help, rich_help_panel=meta.get("panel"), metavar=metavar)
    return inspect.Parameter(
        f.name, keyword, default=None, annotation=Annotated[kind | None, option]
    )


def nested_configs(cls: type) -> list[tuple[dataclasses.Field, type, set[str]]]:
    """(field, its class, the class's fields that are not options here) per nested field."""
    own = {f.name for f in dataclasses.fields(cls)}
    return [
        (f, f.metadata["nested"], own | set(f.metadata.get("fixed", ())))
        for f in dataclasses.fields(cls)
        if f.metadata.get("nested")
    ]


def config_parameters(cls: type, skip: set[str] = frozenset()) -> list[inspect.Parameter]:
    """One keyword parameter per option field of ``cls`` (positional arguments first), then the
    options of its nested config classes.

    None means "not given", so ``build_config`` keeps the ``--config`` file's value or the
    dataclass default; booleans that default to on get a ``--x/--no-x`` pair.
    """
    hints = typing.get_type_hints(cls)
    own = [f for f in option_fields(cls) if f.name not in skip]
    own.sort(key=lambda f: not f.metadata.get("argument"))
    params = [_parameter(f, _unwrap_optional(hints[f.name]), cls) for f in own]
    for _, inner, fixed in nested_configs(cls):
        params += config_parameters(inner, skip=fixed)
    return params


def config_values(cls: type, given: dict[str, Any], skip: set[str] = frozenset()) -> dict[str, Any]:
    """Flag values for ``build_config``: tuples parsed from their comma text (or made from
    repeated values), False flags that were not given dropped (so a config file can still turn
    them on)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in option_fields(cls):
        value = given.get(f.name)
        kind = _unwrap_optional(hints[f.name])
        if f.name in skip or value is None or (kind is bool and f.default is False and not value):
            continue
        if typing.get_origin(kind) is tuple:
            value = parse_tuple(value, kind, flag_of(f)) if isinstance(value, str) else tuple(value)
        values[f.name] = value
    return values


def make_config(cls: type, config: Path | None, options: dict[str, Any]) -> Any:
    """``cls`` from its defaults, the ``--config`` file and the flags. A nested config reads the
    same file, takes the outer settings it shares a name with (train, out, device), then its own
    flags."""
    nested = nested_configs(cls)
    inner_keys = {f.name for _, inner, skip in nested for f in option_fields(inner)} - {
        name for *_, skip in nested for name in skip
    }
    cfg = build_config(cls, config, others=inner_keys, **config_values(cls, options))
    for f, inner, fixed in nested:
        outer = {g.name for g in dataclasses.fields(cls)}
        shared = {name: getattr(cfg, name) for name in outer & {g.name for g in fields(inner)}}
        values = config_values(inner, options, skip=fixed)
        built = build_config(inner, config, others=outer, **shared, **values)
        cfg = dataclasses.replace(cfg, **{f.name: built})
    return cfg


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/TOML file whose keys mirror the options; flags win."),
]


def config_command(
    name: str,
    cls: type,
    run: Callable[[Any, bool], None],
    json_help: str | None = "Print one JSON object.",
) -> Callable[..., None]:
    """A command whose options are the help-carrying fields of ``cls``, plus --json (unless
    ``json_help`` is None) and --config; ``run(cfg, as_json)`` does the work and the printing."""

    def callback(config: Path | None = None, as_json: bool = False, **options: Any) -> None:
        run(make_config(cls, config, options), as_json)

    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter("config", keyword, default=None, annotation=ConfigOpt)]
    if json_help is not None:
        json_opt = Annotated[bool, typer.Option("--json", help=json_help)]
        extra.insert(0, inspect.Parameter("as_json", keyword, default=False, annotation=json_opt))
    callback.__name__ = name.replace("-", "_")
    return with_signature(callback, [*config_parameters(cls), *extra])


def with_signature(
    function: Callable[..., Any], params: list[inspect.Parameter]
) -> Callable[..., Any]:
    """Give ``function(**kwargs)`` an explicit signature that typer reads its options from."""
    function.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in params}
    return function
