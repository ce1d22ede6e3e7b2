"""A Python call's keyword settings as a command's config dataclass, checked like the CLI's.

The names are the command's options with underscores (``list_file`` for ``--list``), their old
names, and the options of a nested config (fewshot takes every train-temporal option), so a
setting is spelled as in ``mote <command> --help`` and a typo is an error, never a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
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


def config_for(cls: type[T], caller: str, settings: Mapping[str, Any]) -> T:
    """``cls`` from keyword ``settings``, converted as a ``--config`` file's values are (a str
    path becomes a Path, a list a tuple; a str for a tuple is comma text, as on the CLI)."""
    from mote.stages.options import make_config  # typer: only when a command runs

    owners = setting_owners(cls)
    unknown = sorted(set(settings) - set(owners))
    if unknown:
        valid = ", ".join(sorted(owners))
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
