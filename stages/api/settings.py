"""A Python call's keyword settings as a command's config dataclass, checked like the CLI's.

The names are the command's options with underscores (``list_file`` for ``--list``), their old
names, and the options of a nested config (fewshot takes every train-temporal option), so a
setting is spelled as in ``mote <command> --help`` and a typo is an error, never a default.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeVar

from mote.pipeline.config import coerce_value, option_fields
from mote.pipeline.errors import ConfigError

T = TypeVar("T")


def setting_owners(cls: type) -> dict[str, tuple[type, str]]:
    """Every name a call may use -> (the config class that holds it, its field name)."""
    from mote.stages.options import nested_configs

    names: dict[str, tuple[type, str]] = {}
    for _, inner, fixed in nested_configs(cls):
        names.update((f.name, (inner, f.name)) for f in option_fields(inner) if f.name not in fixed)
    for f in option_fields(cls):
        names[f.name] = (cls, f.name)
        names.update((alias, (cls, f.name)) for alias in f.metadata.get("aliases", ()))
    return names


def config_for(
    cls: type[T], caller: str, settings: Mapping[str, Any], also: tuple[str, ...] = ()
) -> T:
    """``cls`` from keyword ``settings``, converted as a ``--config`` file's values are (a str
    path becomes a Path, a list a tuple; a str for a tuple is comma text, as on the CLI).
    ``also``: the caller's own keywords (``progress``), listed with the valid names."""
    from mote.stages.options import make_config  # typer: only when a command runs

    owners = setting_owners(cls)
    unknown = sorted(set(settings) - set(owners))
    if unknown:
        valid = ", ".join(sorted({*owners, *also}))
        raise ConfigError(f"{caller}: unknown setting(s) {', '.join(unknown)}. Valid: {valid}")
    missing = [
        f.name
        for f in option_fields(cls)
        if f.name not in settings
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{caller}: missing required setting(s): {', '.join(missing)}")
    values = {}
    for key, value in settings.items():
        owner, name = owners[key]
        values[name] = _converted(key, value, typing.get_type_hints(owner)[name], caller)
    return make_config(cls, None, values)


def _converted(name: str, value: Any, annotation: Any, caller: str) -> Any:
    """A Python value for a field: tuples element by element, the rest as config files do."""
    kind = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(annotation) if a is not type(None))
    if value is None or typing.get_origin(kind) is not tuple:
        return coerce_value(name, value, annotation, caller)
    if isinstance(value, str):
        return value  # comma text, parsed as on the command line ("2,4,8")
    items = (value,) if isinstance(value, PathLike) else tuple(value)
    args = typing.get_args(kind)
    kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
    if len(kinds) != len(items):
        raise ConfigError(f"{caller}: setting '{name}' takes {len(kinds)} values, got {value!r}")
    return tuple(coerce_value(name, v, k, caller) for v, k in zip(items, kinds, strict=True))


def option_parameters(
    cls: type, skip: frozenset[str] = frozenset()
) -> list[tuple[inspect.Parameter, str]]:
    """A keyword-only parameter (name, default, type) and its help line per option of config
    dataclass ``cls`` and of its nested configs, less ``skip``: a Python function's signature
    and docstring from the fields that make ``--help``, so the two cannot disagree."""
    from mote.stages.options import field_default_text, nested_configs  # typer: on use only

    keyword = inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(cls)
    out = []
    for f in option_fields(cls):
        if f.name in skip:
            continue
        default = _default(f)
        text = field_default_text(f)
        if default is inspect.Parameter.empty:
            note = " [required]"
        else:
            note = f" [default: {text}]" if text else ""
        param = inspect.Parameter(f.name, keyword, default=default, annotation=hints[f.name])
        out.append((param, f"{f.name}: {f.metadata['help']}{note}"))
    for _, inner, fixed in nested_configs(cls):
        out += option_parameters(inner, frozenset(skip | fixed))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def documented(
    function: Callable[..., Any],
    summary: str,
    cls: type,
    head: Sequence[inspect.Parameter] = (),
    skip: frozenset[str] = frozenset(),
    extra: Sequence[tuple[inspect.Parameter, str]] = (),
) -> Callable[..., Any]:
    """``function`` (which takes ``**settings``) given the signature and docstring of the
    options of ``cls``: ``head`` (its own parameters) first, then each option (less ``skip``
    and ``head``), then ``extra``; the docstring is ``summary`` and one line per option."""
    listed = [*option_parameters(cls, frozenset(skip | {p.name for p in head})), *extra]
    returns = inspect.signature(function).return_annotation
    params = [*head, *(param for param, _ in listed)]
    function.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    lines = [
        textwrap.fill(
            line, 92, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
        )
        for _, line in listed
    ]
    options = textwrap.indent("\n".join(lines), "    ")
    function.__doc__ = f"{inspect.cleandoc(summary)}\n\nOptions (keyword-only):\n{options}\n"
    return function
