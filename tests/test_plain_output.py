"""Off a terminal (a pipe, a log, a file) mote writes whole plain lines: help at full width with
no boxes, progress as lines without escape codes, and click's refusals as one ``error:`` line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mote.pipeline.config import build_config, option_fields
from mote.pipeline.errors import ConfigError


def _valid_keys(cls: type, tmp_path: Path, **flags) -> tuple[str, set[str]]:
    config = tmp_path / "bad.yaml"
    config.write_text("not_a_setting: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'not_a_setting'") as refused:
        build_config(cls, config, **flags)
    return str(refused.value), set(str(refused.value).split("Valid options: ")[1].split(", "))


def _config_classes() -> list[type]:
    from mote.stages import demo, finetune_e2e, info, train_temporal, zeroshot

    return [
        train_temporal.TrainConfig,
        finetune_e2e.FinetuneConfig,
        zeroshot.ZeroShotConfig,
        demo.DemoConfig,
        info.InfoConfig,
    ]


def test_unknown_config_key_lists_only_option_keys(tmp_path: Path) -> None:
    """Each has fields that are no option (epoch_size, videos, fused...): never listed, and
    refused in a file like an unknown key."""
    for cls in _config_classes():
        _, valid = _valid_keys(cls, tmp_path)
        options = option_fields(cls)
        hidden = {f.name for f in dataclasses.fields(cls)} - {f.name for f in options}
        assert hidden, cls.__name__
        assert not {name.replace("_", "-") for name in hidden} & valid, cls.__name__
        for f in options:
            key = f.metadata.get("flag", "").removeprefix("--") or f.name.replace("_", "-")
            assert key in valid, (cls.__name__, key)
            assert {a.replace("_", "-") for a in f.metadata.get("aliases", ())} <= valid
        config = tmp_path / "hidden.yaml"
        config.write_text(f"{sorted(hidden)[0]}: 1\n")
        with pytest.raises(ConfigError, match="unknown option"):
            build_config(cls, config)


def test_nested_config_keys_are_listed(tmp_path: Path) -> None:
    from mote.stages.extract import ExtractConfig
    from mote.stages.fewshot import FewShotConfig
    from mote.stages.options import make_config

    config = tmp_path / "bad.yaml"
    config.write_text("not_a_setting: 1\n")
    given = {"train": Path("t"), "test": Path("s"), "out": Path("o")}
    with pytest.raises(ConfigError) as refused:
        make_config(FewShotConfig, config, given)
    valid = set(str(refused.value).split("Valid options: ")[1].split(", "))
    assert {"shots", "experts", "lr", "wmr"} <= valid and "training" not in valid
    assert "seed" not in valid and "videos" not in valid and "epoch-size" not in valid
    _, valid = _valid_keys(ExtractConfig, tmp_path)
    assert {"list", "labels", "device", "devices"} <= valid and "list-file" not in valid
