"""Settings for each command: a frozen dataclass, filled from defaults < ``--config`` file < flags.

Config files are YAML or TOML whose keys mirror the command's options (``decode-workers`` or
``decode_workers``). An unknown key is an error that lists the valid ones, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, check_location, locate, storage_options

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


def coerce_value(name: str, value: Any, annotation: Any, source: str) -> Any:
    """Convert a config-file (or Python API) value to the field's type, or explain why it
    cannot be."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        annotation = next(a for a in options if a is not type(None))
    try:
        if annotation is Path:
            return locate(value)  # a URL stays one (Url), never a folder named "s3:"
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


def build_config(
    cls: type[T], config_file: Path | None = None, *, others: Collection[str] = (), **flags: Any
) -> T:
    """Make ``cls`` from its defaults, then the config file, then flags that are not None.

    ``others``: file keys that another config of the same command takes (a nested one), skipped.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__`
    values: dict[str, Any] = {}
    options = {f.name: f for f in option_fields(cls)}  # a file sets options only, like flags
    aliases = {old: name for name, f in options.items() for old in f.metadata.get("aliases", ())}
    if config_file is not None:
        for key, value in read_config_file(config_file).items():
            key = aliases.get(key, key)  # a setting's old name (ExtractConfig: device)
            if key in others and key not in options:
                continue
            if key not in options:
                valid = ", ".join(_file_keys(options.values(), others))
                raise ConfigError(f"{config_file}: unknown option '{key}'. Valid options: {valid}")
            values[key] = coerce_value(key, value, hints[key], str(config_file))
    values.update({key: value for key, value in flags.items() if value is not None})
    _check_locations(options, hints, values)
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


def _check_locations(
    options: dict[str, dataclasses.Field], hints: dict[str, Any], values: dict[str, Any]
) -> None:
    """The one place a path option's value becomes a location: every ``Path`` option (flag,
    file key or Python keyword) through ``locate``, refused when it is a URL the option cannot
    use yet (its ``url`` metadata), and ``--storage-options`` JSON parsed to a dict."""
    for name, f in options.items():
        value = values.get(name)
        if value is None:
            continue
        if f.metadata.get("storage_options"):
            values[name] = storage_options(value, flag_name(f))
        elif _takes_path(hints[name]):
            values[name] = _location(value, f)
        elif _takes_path(_item_type(hints[name])) and isinstance(value, tuple | list):
            values[name] = tuple(_location(item, f) for item in value)


def _location(value: Any, f: dataclasses.Field) -> Path | Url:
    location = locate(value)
    check_location(location, flag_name(f), f.metadata.get("url"))
    return location


def _item_type(annotation: Any) -> Any:
    """The item type of ``tuple[X, ...]`` (or of ``tuple[X, ...] | None``), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    args = typing.get_args(annotation) if typing.get_origin(annotation) is tuple else ()
    return args[0] if args else None


def _takes_path(annotation: Any) -> bool:
    """Whether a field holds a path: ``Path``, ``Path | None`` or ``Path | Url``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(a in (Path, Url) for a in typing.get_args(annotation))
    return annotation in (Path, Url)


def flag_name(f: dataclasses.Field) -> str:
    """The option's flag (``--list`` for ``list_file``), or its metavar when positional."""
    if f.metadata.get("argument"):
        return f.metadata.get("metavar") or f.name.upper()
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _file_keys(options: Collection[dataclasses.Field], others: Collection[str]) -> list[str]:
    """The keys a config file may hold, spelled as their flags: each option, its old names,
    and a nested config's options (``others``); never a field that is no option."""
    keys = set(others)
    for f in options:
        keys.add(f.metadata.get("flag", "").removeprefix("--") or f.name)
        keys.update(f.metadata.get("aliases", ()))
    return sorted(key.replace("_", "-") for key in keys)


def setting(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:
    """A config field that is also a CLI option (and ``--config`` key). ``min``, ``above`` and
    ``max`` bound a number (each number of a tuple): >= min, > above, <= max (``check_ranges``)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


# Every seed: numpy's legacy RandomState, the narrowest generator a user's own code may feed a
# seed to, takes 0 to 2**32 - 1; numpy's Generator refuses a negative one.
SEED_MAX = 2**32 - 1


def seed_setting(help: str, default: Any = 0, **meta: Any) -> Any:
    """A seed (or, for a tuple, each seed) of a command: 0 to ``SEED_MAX``."""
    return setting(default, f"{help} 0 to {SEED_MAX}.", min=0, max=SEED_MAX, **meta)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are CLI options (they carry help)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")]


def check_ranges(cfg: Any) -> None:
    """The one range rule of every option: a float is finite, and a number (or each number of
    a tuple) respects its field's ``min``, ``above`` and ``max``; None ("not given") passes.
    Run when a ``Settings`` dataclass is made, so flags, ``--config`` files and Python callers
    all meet it."""
    for f in option_fields(type(cfg)):
        value = getattr(cfg, f.name)
        low, above, high = (f.metadata.get(key) for key in ("min", "above", "max"))
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            flag = flag_name(f)
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{flag} must be a finite number, got {item}")
            if low is not None and item < low:
                raise ConfigError(f"{flag} must be >= {_number(low)}, got {_number(item)}")
            if above is not None and item <= above:
                raise ConfigError(f"{flag} must be > {_number(above)}, got {_number(item)}")
            if high is not None and item > high:
                raise ConfigError(f"{flag} must be <= {_number(high)}, got {_number(item)}")


def _number(value: float) -> str:
    """A bound or a value as typed: an int whole (a seed's 4294967295), a float short (1e+30)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


class Settings:
    """Base of every command's settings dataclass: making one checks its ranges."""

    def __post_init__(self) -> None:
        check_ranges(self)


# Settings several commands share, each spelled here once. A field's metadata: ``help`` makes it
# an option; ``flag`` names the option when it is not --field-name; ``aliases`` are old names (a
# --config key and a second flag); ``argument`` makes it positional (``metavar`` names it);
# ``multiple`` takes a tuple as a repeated option; ``short`` adds a one-letter flag (-k);
# ``default_text`` describes a data-dependent default (stages/options.py reads them all).
DEVICE_HELP = "auto (cuda when available), cpu, cuda, cuda:1."
# What --devices (several encoder devices) takes: extract's help and device.py's refusals.
DEVICES_CHOICES = "all (every visible GPU, else the CPU), GPU indices (0,1,3), cuda:1"


def device_setting(lead: str = "") -> Any:
    """The one torch device a command computes on (``pipeline.device.resolve_device``)."""
    return setting("auto", f"{lead}{DEVICE_HELP}")


DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-16", "openai"


def model_setting(note: str = "", carried: str | None = None) -> Any:
    """The CLIP model (``pipeline.clip.build.build_clip``). ``carried`` names what the model is
    taken from when not given (the store resumed, the run warm-started from): the field is then
    None until ``carried_clip`` fills it."""
    help = "open_clip model name, JSON config, local-dir:PATH, or mote-tiny."
    if carried is None:
        return setting(DEFAULT_MODEL, f"{help} {note}".strip())
    return setting(None, f"{help} {note}".strip(), default_text=f"{DEFAULT_MODEL}; {carried}")


def pretrained_setting(note: str = "", carried: str | None = None) -> Any:
    """The CLIP weights (``pipeline.clip.weights``); ``carried`` as for ``model_setting``."""
    help = "Weights tag (openai), a local weights file, or none (random, --seed)."
    if carried is None:
        return setting(DEFAULT_PRETRAINED, f"{help} {note}".strip())
    text = f"{DEFAULT_PRETRAINED}; {carried}"
    return setting(None, f"{help} {note}".strip(), default_text=text)


def carried_clip(
    model: str | None, pretrained: str | None, recorded: tuple[str, str] | None
) -> tuple[str, str]:
    """The CLIP a command runs with: the flags given, else what the store or run it continues
    ``recorded`` (model, weights), else the defaults. Weights are carried only with the model
    they belong to; a flag that contradicts the record is left for the command's own check to
    name (a store refuses another encoder in one line)."""
    if recorded is not None and model in (None, recorded[0]):
        return recorded[0], recorded[1] if pretrained is None else pretrained
    return model or DEFAULT_MODEL, pretrained or DEFAULT_PRETRAINED


def store_in_setting(help: str, default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A feature store a command reads: a local path or an fsspec URL (s3://, gs://)."""
    return setting(default, f"{help} A path or a URL (s3://bucket/s.zarr).", url="read", **meta)


def storage_options_setting() -> Any:
    """fsspec options for the URLs a command reads (credentials, endpoint, region)."""
    return setting(
        None,
        "JSON object of fsspec options for s3:// or gs:// stores and videos (e.g. "
        "'{\"anon\": true}'); "
        "credentials and endpoint otherwise come from the usual AWS_* environment and profiles.",
        storage_options=True,
    )


def dataset_setting() -> Any:
    return setting(
        help="k400, k600, ucf101, hmdb51, ssv2, list, or folder (a class per sub-folder of --root)."
    )


def list_file_setting(lead: str = "Video list", note: str = " (list)") -> Any:
    return setting(
        None,
        f"{lead} 'relative/path label'{note}; ssv2: the split's JSON, by default "
        "something-something-v2-SPLIT.json beside --labels.",
        flag="--list",
    )


def allow_outside_root_setting() -> Any:
    """Whether a video list may name files outside ``--root`` (``check_inside_root``)."""
    return setting(
        False,
        "Read list entries that leave --root (an absolute path, a '..' part); without it such "
        "a list is refused, naming its line.",
    )


def labels_file_setting(note: str = " (list)") -> Any:
    return setting(
        None,
        f"Label CSV 'id,name'{note}; ssv2: something-something-v2-labels.json.",
        flag="--labels",
    )


def kinetics_csv_setting() -> Any:
    return setting(
        None,
        "k400: the official annotation CSV (label,youtube_id,time_start,time_end,split); the "
        "--split rows whose clips exist under --root.",
    )


def root_setting(help: str = "Folder holding the videos.", **meta: Any) -> Any:
    return setting(None, help, **meta)


def video_root_setting(**meta: Any) -> Any:
    """The videos' folder of a command that also reads them from object storage."""
    help = "Folder holding the videos, or a URL prefix (s3://bucket/videos)."
    return root_setting(help, url="read", **meta)


# The default of a --root that plays or shows the videos of an embeddings file (search, serve).
PATH_COLUMN_DEFAULT = "the embeddings table's path column"


def best_setting() -> Any:
    """Which weights of a run a command scores with."""
    return setting(False, "Use the best-validation weights, not the last.")


def strict_setting() -> Any:
    """Whether any failed video fails a command that decodes videos (``videos_exit_code``)."""
    return setting(
        False,
        "Exit 1 when any video failed (default: only when every video failed; failures are "
        "always listed).",
    )


def run_out_setting() -> Any:
    """The run folder a training or import command creates."""
    return setting(help="Run folder to create.")


def decode_workers_setting(default_text: str) -> Any:
    return setting(
        None, "Decode processes; 0 decodes in this process.", default_text=default_text, min=0
    )


def decoder_setting() -> Any:
    return setting("auto", "auto, decord, pyav or nvdec.")


def decode_timeout_setting() -> Any:
    return setting(120.0, "Seconds before a video's decode is abandoned.", above=0)


# Images per CLIP batch when --batch-size is not given: a GPU fills its cores with larger ones.
ENCODER_BATCH_GPU, ENCODER_BATCH_CPU = 256, 32


def default_encoder_batch(device: Any) -> int:
    """Images per CLIP batch on ``device`` (a ``torch.device``) when none is asked for."""
    return ENCODER_BATCH_GPU if device.type == "cuda" else ENCODER_BATCH_CPU


def batch_size_setting() -> Any:
    """Images per CLIP batch, when a command encodes videos (``default_encoder_batch``)."""
    text = f"{ENCODER_BATCH_GPU} on GPU, {ENCODER_BATCH_CPU} on CPU"
    return setting(None, "Images per CLIP batch.", default_text=text, min=1)


DECODERS = ("auto", "decord", "pyav", "nvdec")


def check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ConfigError(f"--decoder must be auto, decord, pyav or nvdec, got '{decoder}'")


RUN_HELP = "Run folder (train-temporal or import-reference)."


def scored_run_setting(without: str | None = None) -> Any:
    """The run folder a scoring command loads (evaluate, zeroshot); with ``without`` (what the
    command does with no run) it may be left out: keyword-only, so it can stay first."""
    if without is None:
        return setting(help=RUN_HELP)
    meta = {"help": f"{RUN_HELP} Without it: {without}", "default_text": "none"}
    return dataclasses.field(default=None, kw_only=True, metadata=meta)


TFM_OVERRIDES = {
    "tfm_gamma": "Override the run's TFM gamma (Table 2f).",
    "tfm_k": "Override the run's TFM neighbours K (Table 7b).",
}


def tfm_override_setting(name: str, model_config: type) -> Any:
    """--tfm-gamma / --tfm-k of a scoring command: None keeps the run's value; the help shows
    ``model_config``'s (MoTEConfig's) default, and its bounds hold."""
    field = next(f for f in dataclasses.fields(model_config) if f.name == name)
    bounds = {key: field.metadata[key] for key in ("min", "above", "max") if key in field.metadata}
    return setting(None, TFM_OVERRIDES[name], default_text=field.default, **bounds)
