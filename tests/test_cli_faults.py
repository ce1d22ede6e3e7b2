"""Every fault is one line naming the file and the way out; --help shows dataclass defaults."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
import zarr
from typer.testing import CliRunner

from mote.pipeline.config import build_config
from mote.pipeline.errors import ConfigError
from mote.stages.cli import app
from mote.stages.extract import ExtractConfig
from mote.stages.faults import fault_message
from mote.stages.options import format_default


def mote(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MOTE_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "mote.stages.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("command", ["report", "train-temporal"])
def test_out_that_is_a_file_is_one_plain_line(tmp_path, command):
    (tmp_path / "run").mkdir()
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    if command == "report":
        result = mote("report", str(tmp_path / "run"), "--out", str(taken))
    else:
        result = mote("train-temporal", "--train", str(tmp_path / "none.zarr"), "--out", str(taken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(taken) in lines[0] and ("another" in lines[0] or "file" in lines[0])
    assert "Traceback" not in result.stderr and "\x1b[" not in result.stderr


def test_mote_debug_shows_the_traceback(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    env = {**os.environ, "MOTE_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mote.stages.cli", "report", str(tmp_path), "--out", str(taken)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_real_os_errors_map_to_their_fix(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(OSError) as not_dir:
        (file / "inside.json").write_text("y")  # a real ENOTDIR
    assert not_dir.value.errno == errno.ENOTDIR
    assert fault_message(not_dir.value).startswith(f"{file / 'inside.json'}: a part of this path")
    with pytest.raises(OSError) as exists:
        file.mkdir(parents=True, exist_ok=True)  # what a stage does with an --out that is a file
    assert "already exists and is not a folder" in fault_message(exists.value)
    for code, words in [
        (errno.ENOSPC, "disk full"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ]:
        message = fault_message(OSError(code, os.strerror(code), str(tmp_path / "s.zarr")))
        assert message.startswith(f"{tmp_path / 's.zarr'}: {words}"), message


def test_undecodable_chunk_names_the_array(tmp_path):
    array = zarr.create_array(
        tmp_path / "s.zarr" / "embeddings", shape=(40,), chunks=(10,), dtype="f4"
    )
    array[:] = np.arange(40, dtype="f4")
    chunk = tmp_path / "s.zarr" / "embeddings" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[4:12] = b"\xff" * 8
    chunk.write_bytes(bytes(data))
    with pytest.raises(Exception) as caught:
        zarr.open_array(tmp_path / "s.zarr" / "embeddings")[:]
    message = fault_message(caught.value)
    assert "s.zarr/embeddings" in message and "damaged" in message and "\n" not in message


@pytest.mark.parametrize("frames", [0, 78, 500])
def test_frames_beyond_the_model_are_refused(tmp_path, frames):
    from mote.stages import extract

    (tmp_path / "v").mkdir()
    cfg = build_config(
        ExtractConfig,
        None,
        dataset="ucf101",
        out=tmp_path / "s.zarr",
        root=tmp_path / "v",
        frames=frames,
    )
    with pytest.raises(ConfigError, match="--frames"):
        extract.run(cfg)
    assert not (tmp_path / "s.zarr").exists()


def _classes() -> dict[str, list[type]]:
    from mote.pipeline.temporal.temporal_config import MoTEConfig
    from mote.stages import (
        demo,
        embed,
        evaluate,
        extract,
        fewshot,
        finetune_e2e,
        import_reference,
        predict,
        report,
        search,
        serve,
        train_temporal,
        zeroshot,
    )

    return {
        "extract": [extract.ExtractConfig],
        "train-temporal": [train_temporal.TrainConfig],
        "finetune-e2e": [finetune_e2e.FinetuneConfig],
        "evaluate": [evaluate.EvaluateConfig, MoTEConfig],
        "embed": [embed.EmbedConfig, MoTEConfig],
        "search": [search.SearchConfig],
        "serve": [serve.ServeConfig],
        "zeroshot": [zeroshot.ZeroShotConfig, MoTEConfig],
        "fewshot": [fewshot.FewShotConfig, train_temporal.TrainConfig],
        "import-reference": [import_reference.ImportReferenceConfig],
        "report": [report.ReportConfig],
        "predict": [predict.PredictConfig],
        "demo": [demo.DemoConfig],
        "info": [],
    }


def test_every_help_shows_the_dataclass_defaults():
    group = typer.main.get_command(app)
    classes = _classes()
    assert set(classes) == set(group.list_commands(None))
    for name, owners in classes.items():
        shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output
        command = group.get_command(None, name)
        # not isinstance(p, click.Option): newer typer parses with its own copy of click
        options = [p for p in command.params if p.param_type_name == "option"]
        for param in options:
            fields = [f for cls in owners for f in dataclasses.fields(cls) if f.name == param.name]
            if not fields or "default_text" in fields[0].metadata:
                continue
            value = format_default(fields[0].default)
            if value is None:
                continue
            line = next(
                line for line in shown.splitlines() if re.match(rf"\s*{param.opts[0]}[ ,]", line)
            )
            assert f"[default: {value}]" in line, (name, param.opts, line)


def test_adding_a_mote_switch_needs_only_the_field():
    """TrainConfig and the CLI options follow MoTEConfig: every switch with help is both."""
    from mote.pipeline.temporal.temporal_config import MoTEConfig
    from mote.stages.train_temporal import TrainConfig, model_config

    switches = [f.name for f in dataclasses.fields(MoTEConfig) if f.metadata.get("help")]
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(switches) <= train_fields
    cfg = build_config(TrainConfig, None, train=Path("t"), out=Path("o"), tfm_k=3, experts=2)
    assert (model_config(cfg, 512).tfm_k, model_config(cfg, 512).experts) == (3, 2)
    assert model_config(cfg, 768).layers == 6
    shown = CliRunner().invoke(app, ["train-temporal", "--help"], env={"COLUMNS": "400"}).output
    for name in switches:
        assert "--" + name.replace("_", "-") in shown, name


def test_fewshot_takes_every_training_setting(tmp_path):
    """fewshot nests TrainConfig: each of its options (less those the protocol sets per run) is
    a fewshot flag and a --config key, and reaches the runs' training config."""
    from mote.pipeline.config import option_fields
    from mote.stages.fewshot import FewShotConfig
    from mote.stages.options import make_config
    from mote.stages.train_temporal import TrainConfig

    fixed = dict(dataclasses.fields(FewShotConfig)[-1].metadata)["fixed"]
    group = typer.main.get_command(app)
    flags = {o for p in group.get_command(None, "fewshot").params for o in p.opts}
    for f in option_fields(TrainConfig):
        if f.name not in fixed:
            assert (f.metadata.get("flag") or "--" + f.name.replace("_", "-")) in flags, f.name
    config = tmp_path / "fewshot.yaml"
    config.write_text("shots: [1, 2]\nexperts: 2\n")
    given = {"train": Path("t"), "test": Path("s"), "out": Path("o"), "lr": 1e-3, "wmr": False}
    cfg = make_config(FewShotConfig, config, given)
    assert cfg.shots == (1, 2)
    assert (cfg.training.experts, cfg.training.lr, cfg.training.wmr) == (2, 1e-3, False)
    assert (cfg.training.train, cfg.training.out) == (Path("t"), Path("o"))
    config.write_text("seed: 3\n")  # the protocol sets it per run: not a fewshot key
    with pytest.raises(ConfigError, match="unknown option 'seed'"):
        make_config(FewShotConfig, config, given)


def test_info_builds_its_config_like_every_command(tmp_path):
    """info goes through build_config too: a --config file sets its options."""
    from mote.stages.info import InfoConfig
    from mote.stages.options import make_config

    config = tmp_path / "info.toml"
    config.write_text("verify = true\nsample = 2\n")
    cfg = make_config(InfoConfig, config, {"store": tmp_path / "s.zarr"})
    assert (cfg.verify, cfg.sample, cfg.device) == (True, 2, "auto")
