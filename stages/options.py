"""CLI options derived from config dataclasses, so a setting's default and help live in one place.

A config field becomes a flag by carrying help text in its metadata (``setting`` in
pipeline/config.py, ``switch`` in ``mote_model``). ``config_parameters`` turns those fields into
typer options; ``default_help`` writes the ``[default: X]`` of any option from the dataclass
default, or from a ``default_text`` callable in the metadata for defaults that depend on the
data (per-width sizes).

Metadata keys: ``help`` (required to be an option), ``flag`` (the option name when it is not
``--field-name``), ``default_text`` (zero-argument callable giving the default's description).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mote.pipeline.config import option_fields
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
        return describe() if callable(describe) else str(describe)
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


def opt(cls: type, name: str, help: str, *flags: str, **kwargs: Any) -> Any:
    """A typer.Option whose help ends with the default of ``cls.name``."""
    kwargs.setdefault("show_default", False)  # the help text already ends with it
    return typer.Option(*flags, help=default_help(cls, name, help), **kwargs)


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


def config_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per option field of ``cls``, typed for typer, default None.

    None means "not given", so ``build_config`` keeps the ``--config`` file's value or the
    dataclass default; booleans that default to on get a ``--x/--no-x`` pair.
    """
    hints = typing.get_type_hints(cls)
    params = []
    for f in option_fields(cls):
        kind = _unwrap_optional(hints[f.name])
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        names = [flag]
        if kind is bool:
            names = [f"{flag}/--no-{flag[2:]}"] if f.default is True else [flag]
        elif typing.get_origin(kind) is tuple:
            kind = str
        elif kind not in (int, float, str, Path):
            kind = str
        option = typer.Option(*names, help=default_help(cls, f.name, f.metadata["help"]))
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return params


def config_values(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Flag values for ``build_config``: tuples parsed from their comma text, False flags that
    were not given dropped (so a config file can still turn them on)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in option_fields(cls):
        value = given.get(f.name)
        kind = _unwrap_optional(hints[f.name])
        if value is None or (kind is bool and f.default is False and value is False):
            continue
        if typing.get_origin(kind) is tuple and isinstance(value, str):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            value = parse_tuple(value, kind, flag)
        values[f.name] = value
    return values


def with_signature(
    function: Callable[..., Any], params: list[inspect.Parameter]
) -> Callable[..., Any]:
    """Give ``function(**kwargs)`` an explicit signature that typer reads its options from."""
    function.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in params}
    return function
