"""`--log tensorboard`: the history's numbers as TensorBoard scalars, read back with
TensorBoard's own reader, once per epoch through a kill and a resume; one-line errors for an
unknown log and a missing package. Stores are real zarr stores of random features."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import random_store, tensorboard_scalars

import mote
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import RunFolder
from mote.stages import train_temporal

pytest.importorskip("tensorboard", reason="the mote[tensorboard] extra (.[test] brings it)")

CLASSES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("metric_logs")
    made = []
    for name, videos, views, seed in (("train", 32, (1, 1), 0), ("val", 16, (3, 1), 1)):
        ids = [f"v{i}" for i in range(videos)]
        labels = [i % len(CLASSES) for i in range(videos)]
        random_store(work / f"{name}.zarr", ids, labels, CLASSES, views=views, seed=seed)
        made.append(work / f"{name}.zarr")
    return made[0], made[1]


def settings(stores, out: Path, **overrides) -> dict:
    train, val = stores
    return {
        **dict(
            train=train,
            val=val,
            out=out,
            layers=1,
            epochs=3,
            warmup_epochs=1,
            batch_size=8,
            micro_batches=1,
            lr=1e-3,
            clip_lr_ratio=1.0,
            device="cpu",
        ),
        **overrides,
    }


class Killed(BaseException):
    """What a SIGKILL between an epoch's history line and its checkpoint looks like in-process."""


def test_tensorboard_holds_every_epoch_of_the_history_once_through_kills(
    stores, tmp_path, monkeypatch
):
    folder = RunFolder(tmp_path / "run")

    def run(**overrides) -> dict:
        return train_temporal.run(
            train_temporal.TrainConfig(**settings(stores, folder.path, log=("tensorboard",)),
                                       **overrides)
        )  # fmt: skip

    def kill(*args, **kwargs):
        raise Killed

    real = train_temporal.save_checkpoint
    monkeypatch.setattr(train_temporal, "save_checkpoint", kill)
    with pytest.raises(Killed):  # killed in epoch 1, before its checkpoint
        run()
    monkeypatch.setattr(train_temporal, "save_checkpoint", real)
    run(resume=True, stop_after_epochs=1)
    monkeypatch.setattr(train_temporal, "save_checkpoint", kill)
    with pytest.raises(Killed):  # epoch 2 in the history and not in the checkpoint
        run(resume=True)
    monkeypatch.setattr(train_temporal, "save_checkpoint", real)
    # the Python API takes the same option, as comma text
    mote.train_temporal(**settings(stores, folder.path, log="tensorboard", resume=True))

    history = folder.read_history()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    scalars = tensorboard_scalars(folder.path)
    expected = {
        "loss/total", "loss/ce", "loss/wmr", "loss/mse", "train/lr", "train/top1",
        "train/videos", "val/top1_1view", "time/epoch_seconds", "time/videos_per_s",
    }  # fmt: skip
    assert expected <= set(scalars)
    keys = {
        "loss/total": "loss", "loss/ce": "loss_ce", "loss/wmr": "loss_wmr",
        "loss/mse": "loss_mse", "train/lr": "lr", "val/top1_1view": "val_top1",
        "time/epoch_seconds": "seconds",
    }  # fmt: skip
    for tag, key in keys.items():
        want = [(row["epoch"], float(np.float32(row[key]))) for row in history]
        assert scalars[tag] == want, tag
    # every number of the history is a tag, and nothing else is
    numbers = {k for row in history for k, v in row.items() if isinstance(v, int | float)}
    assert len(scalars) == len(numbers - {"epoch"})


def test_no_log_writes_no_tensorboard_folder(stores, tmp_path):
    folder = RunFolder(tmp_path / "run")
    train_temporal.run(train_temporal.TrainConfig(**settings(stores, folder.path, epochs=1)))
    assert folder.is_finished() and not folder.tensorboard_dir.exists()


def test_an_unknown_log_is_one_error_listing_the_known_ones(stores, tmp_path):
    with pytest.raises(ConfigError, match="unknown metric log 'wandb'; known: tensorboard"):
        mote.train_temporal(**settings(stores, tmp_path / "run", log="tensorboard,wandb"))
    assert not (tmp_path / "run").exists()  # refused before any run file


# The CLI in a process where `import tensorboard` fails, as without the extra.
WITHOUT_TENSORBOARD = """
import runpy, sys
sys.modules["tensorboard"] = None
sys.argv = ["mote", *sys.argv[1:]]
runpy.run_module("mote.stages", run_name="__main__")
"""


def test_a_missing_tensorboard_is_one_line_naming_the_extra_before_training(stores, tmp_path):
    out = tmp_path / "run"
    train, val = stores
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORBOARD, "train-temporal", "--train", str(train),
         "--out", str(out), "--device", "cpu", "--log", "tensorboard"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "pip install 'mote[tensorboard]'" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()  # refused before any run file
