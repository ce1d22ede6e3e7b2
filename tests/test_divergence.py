"""The divergence guard: a run whose loss or weights stop being finite ends with one line naming
the epoch and step, keeps its last good checkpoint and never writes non-finite weights; steps an
fp16 loss scaler skips are counted, and a run that skips most of an epoch stops (issue 16)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mote.pipeline.errors import TrainingDiverged
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.loop import StepBatch, Trainer
from mote.pipeline.train.schedule import build_optimizer
from mote.pipeline.train.train_settings import TrainingSettings

D, T, C, BATCH = 16, 4, 3, 6


class Batches:
    """Fixed batches per epoch; ``poison`` maps (epoch, step) to a value written into the
    step's features (NaN, inf) so that step's loss is not finite."""

    def __init__(self, steps: int, poison: dict[tuple[int, int], float]) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [
            (torch.randn(BATCH, T, D, generator=g), torch.randint(C, (BATCH,), generator=g))
            for _ in range(steps)
        ]
        self.poison, self.epoch = poison, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for step, (inputs, labels) in enumerate(self.batches):
            value = self.poison.get((self.epoch, step))
            if value is not None:
                inputs = inputs.clone()
                inputs[0, 0, 0] = value
            yield StepBatch(inputs, labels, len(labels))


def trainer(precision: str = "fp32") -> Trainer:
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=1))
    loop = TrainingSettings(epochs=3, micro_batches=1, warmup_epochs=0, precision=precision)
    optimizer = build_optimizer([("all", list(model.parameters()), 1e-3)], 0.2)
    return Trainer(loop, DistContext.from_env("cpu"), model, optimizer)


def text() -> torch.Tensor:
    return F.normalize(torch.randn(C, D, generator=torch.Generator().manual_seed(1)), dim=-1)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_epoch(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    run = trainer()
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 of 3: the loss became NaN"):
        run.fit(Batches(3, {(1, 1): float("nan")}), text(), folder)
    history = [json.loads(line) for line in folder.history_file.read_text().splitlines()]
    assert [line["epoch"] for line in history] == [1]
    weights = load_file(str(folder.model_file))
    assert all(torch.isfinite(t).all() for t in weights.values())
    _, metadata = folder.read_checkpoint()
    assert metadata["epoch"] == "1"  # resume restarts from the last good epoch


def test_the_message_names_the_fix():
    with pytest.raises(TrainingDiverged) as caught:
        trainer().train_epoch(Batches(2, {(0, 0): float("inf")}), text(), 0)
    message = str(caught.value)
    assert "epoch 1, step 1 of 2" in message and "--lr" in message and "fp32" in message
    assert "\n" not in message


def test_a_finite_epoch_passes_and_reports_no_skips():
    stats = trainer().train_epoch(Batches(3, {}), text(), 0)
    assert torch.isfinite(torch.tensor(stats["loss"])) and "skipped_steps" not in stats


def test_an_fp16_scaler_skip_is_counted_not_fatal():
    run = trainer("fp16")  # CPU autocast + GradScaler("cpu"): the CUDA path's twin
    calibration = run.train_epoch(Batches(8, {}), text(), 0)  # the scale comes down first
    assert 0 < calibration["skipped_steps"] <= 7
    before = {n: p.detach().clone() for n, p in run.losses.named_parameters()}
    stats = run.train_epoch(Batches(4, {(1, 2): float("inf")}), text(), 1)
    assert stats["skipped_steps"] == 1 and torch.isfinite(torch.tensor(stats["loss"]))
    after = dict(run.losses.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[n], p) for n, p in after.items())  # others stepped


def test_a_scaler_that_skips_most_steps_stops_the_run():
    poison = {(0, step): float("inf") for step in range(1, 14)}
    with pytest.raises(TrainingDiverged, match=r"skipped 1[23] of 14 steps"):
        trainer("fp16").train_epoch(Batches(14, poison), text(), 0)


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ({"lr": float("nan")}, "--lr must be a finite number, got nan"),
        ({"lr": 0.0}, "--lr must be > 0, got 0"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs must be >= 0"),
        ({"weight_decay": float("inf")}, "--weight-decay must be a finite number, got inf"),
        ({"stop_after_epochs": 0}, "--stop-after-epochs must be >= 1"),
        ({"memory_gb": -1.0}, "--memory-gb must be > 0, got -1"),
        ({"experts": 0}, "--experts must be >= 1"),
        ({"loss_weights": (1.0, float("nan"), 0.1)}, "--loss-weights must be a finite number"),
        ({"epoch_size": 0}, "epoch_size must be >= 1"),
    ],
)
def test_training_settings_out_of_range_or_not_finite_are_refused(tmp_path, bad, fragment):
    """One rule for every option, met when the settings are made (flags, --config files and
    Python callers alike): `--lr nan` used to train 30 epochs of NaN."""
    from mote.pipeline.errors import ConfigError
    from mote.stages import train_temporal

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        cfg = train_temporal.TrainConfig(train=tmp_path / "s.zarr", out=tmp_path / "run", **bad)
        train_temporal.run(cfg)
    assert not (tmp_path / "run").exists()
