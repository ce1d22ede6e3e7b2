"""Paths given to commands: a URL is never taken for a local folder.

Every path option of every command (found from the config dataclasses, so a new one cannot
slip through) either reads URLs (feature stores read through fsspec) or refuses one in one line
naming the option; ``file://`` is a local path everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from pathlib import Path

import pytest

import mote.stages.configs
from mote.pipeline.config import Settings, build_config, option_fields
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, locate

READS_URLS = {  # (command config, field): the path options that read stores or videos from URLs
    ("ExtractConfig", "root"),
    ("PredictConfig", "videos"),
    ("FinetuneConfig", "root"),
    ("FinetuneConfig", "val_root"),
    ("InfoConfig", "root"),
    ("EvaluateConfig", "store"),
    ("InfoConfig", "store"),
    ("TrainConfig", "train"),
    ("TrainConfig", "val"),
    ("ZeroShotConfig", "stores"),
    ("FewShotConfig", "train"),
    ("FewShotConfig", "test"),
    ("EmbedConfig", "store"),
    ("SearchConfig", "store"),
    ("SearchConfig", "embeddings"),
    ("ServeConfig", "embeddings"),
    ("FinetuneConfig", "text_from"),
    ("ExtractConfig", "out"),  # written there by one process (test_s3_extract.py)
    ("EmbedConfig", "out"),  # the same, under the same claim (test_s3_embeddings.py)
}


def config_classes() -> list[type]:
    """Every command's settings dataclass, from every module of mote.stages.configs."""
    found = {}
    for info in pkgutil.iter_modules(mote.stages.configs.__path__):
        module = importlib.import_module(f"mote.stages.configs.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Settings)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                found[value.__name__] = value
    return sorted(found.values(), key=lambda cls: cls.__name__)


def path_options() -> list[tuple[type, dataclasses.Field]]:
    """(config class, field) of every option whose type holds a Path."""
    out = []
    for cls in config_classes():
        hints = typing.get_type_hints(cls)
        out += [(cls, f) for f in option_fields(cls) if "Path" in str(hints[f.name])]
    return out


def placeholders(cls: type) -> dict[str, object]:
    """A value for every required field, so the dataclass can be built."""
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kind = hints[f.name]
            values[f.name] = (
                "local/x" if "Path" in str(kind) else {int: 1, float: 1.0}.get(kind, "x")
            )
    return values


PATH_OPTIONS = path_options()


def test_the_commands_have_path_options():
    names = {(cls.__name__, f.name) for cls, f in PATH_OPTIONS}
    assert READS_URLS <= names
    assert len(names) > 20


@pytest.mark.parametrize(
    ("cls", "field"), PATH_OPTIONS, ids=[f"{c.__name__}.{f.name}" for c, f in PATH_OPTIONS]
)
def test_every_path_option_reads_a_url_or_refuses_it(cls, field):
    many = typing.get_origin(typing.get_type_hints(cls)[field.name]) is tuple
    url = "s3://bucket/x.zarr"
    values = placeholders(cls) | {field.name: (url,) if many else url}
    key = (cls.__name__, field.name)
    if key in READS_URLS:
        cfg = build_config(cls, None, **values)
        given = getattr(cfg, field.name)
        assert given == ((Url(url),) if many else Url(url))
        assert isinstance(given[0] if many else given, Url)
        return
    with pytest.raises(ConfigError) as error:
        build_config(cls, None, **values)
    message = str(error.value)
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    name = field.metadata.get("metavar") or field.name.upper()
    assert message.startswith(f"{name if field.metadata.get('argument') else flag} {url}: ")
    assert "takes a local path, not a URL" in message
    values[field.name] = ("file:///tmp/x",) if many else "file:///tmp/x"
    cfg = build_config(cls, None, **values)  # file:// is a local path
    got = getattr(cfg, field.name)
    assert (got[0] if many else got) == Path("/tmp/x")


def test_a_config_file_url_is_checked_like_a_flag(tmp_path):
    from mote.stages.extract import ExtractConfig
    from mote.stages.info import InfoConfig

    file = tmp_path / "c.yaml"
    file.write_text("out: gs://bucket/s.zarr\ndataset: list\n")
    with pytest.raises(ConfigError, match=r"^--out gs://bucket/s.zarr: writing a store to gs://"):
        build_config(ExtractConfig, file)
    file.write_text("storage-options: {anon: true}\n")
    cfg = build_config(InfoConfig, file, store="s3://b/s.zarr")
    assert cfg.storage_options == {"anon": True} and cfg.store == "s3://b/s.zarr"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/s.zarr", Url("s3://bucket/s.zarr")),
        ("file:///data/s.zarr", Path("/data/s.zarr")),
        ("file://localhost/data/a%20b", Path("/data/a b")),
        ("runs/x", Path("runs/x")),
        ("C:/data/s.zarr", Path("C:/data/s.zarr")),  # a drive letter is no scheme
        ("s3:folder", Path("s3:folder")),
    ],
)
def test_locate(text, expected):
    got = locate(text)
    assert got == expected and type(got) is type(expected)


def test_a_file_url_with_a_host_is_refused():
    with pytest.raises(ConfigError, match="names a host"):
        locate("file://server/share/s.zarr")
