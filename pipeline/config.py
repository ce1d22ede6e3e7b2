"""Settings for each command: a frozen dataclass, filled from defaults < ``--config`` file < flags.

Config files are YAML or TOML whose keys mirror the command's options (``decode-workers`` or
``decode_workers``). An unknown key is an error that lists the valid ones, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomllib
import yaml

from mote.pipeline.errors import ConfigError

T = TypeVar("T")
# Config-file keys that are spelled as the CLI flag, not as the setting's field name.
FLAG_ALIASES = {"list": "list_file", "labels": "labels_file"}


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) mapping of option names to values."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .yaml, .yml or .toml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot parse config file: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of option names to values")
    named = {str(key).replace("-", "_"): value for key, value in data.items()}
    return {FLAG_ALIASES.get(key, key): value for key, value in named.items()}


def _coerce(name: str, value: Any, annotation: Any, source: str) -> Any:
    """Convert a config-file value to the field's type, or explain why it cannot be."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        annotation = next(a for a in options if a is not type(None))
    try:
        if annotation is Path:
            return Path(value).expanduser()
        if annotation is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if annotation in (int, float, str):
            if annotation is str and not isinstance(value, str):
                raise TypeError
            return annotation(value)
        if typing.get_origin(annotation) is tuple:
            return tuple(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: option '{name}' must be {getattr(annotation, '__name__', annotation)}, "
            f"got {value!r}"
        ) from None
    return value


def build_config(cls: type[T], config_file: Path | None = None, **flags: Any) -> T:
    """Make ``cls`` from its defaults, then the config file, then flags that are not None."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__`
    values: dict[str, Any] = {}
    aliases = {old: name for name, f in fields.items() for old in f.metadata.get("aliases", ())}
    if config_file is not None:
        for key, value in read_config_file(config_file).items():
            key = aliases.get(key, key)  # a setting's old name (ExtractConfig: device)
            if key not in fields:
                valid = ", ".join(sorted(name.replace("_", "-") for name in fields))
                raise ConfigError(f"{config_file}: unknown option '{key}'. Valid options: {valid}")
            values[key] = _coerce(key, value, hints[key], str(config_file))
    values.update({key: value for key, value in flags.items() if value is not None})
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        names = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"missing required option(s): {names}")
    return cls(**values)


def setting(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:
    """A config field that is also a CLI option (and ``--config`` key)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are CLI options (they carry help)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")]
