"""No training step and no validation batch waits for the device (issue 14, item 2).

The real loops run on a real store; ``DeviceWaits`` (tests/device_waits.py) marks what would
live on a GPU and records any host read of it, or any tensor built from Python data on the
device, inside ``Trainer.run_steps`` (every step of an epoch: batch gather, draws, forward,
backward, optimiser, metrics). On a GPU, bench/gpu_check.sh runs an epoch under
``torch.cuda.set_sync_debug_mode("error")`` as well.
"""

from __future__ import annotations

import pytest
import torch
from device_waits import DeviceWaits, optimizer_tensors

from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.train.loop import Trainer
from mote.stages import extract, train_temporal


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_extract):
    work = tmp_path_factory.mktemp("syncfree")
    data = write_motion_dataset(work / "videos", videos_per_class=3, seed=5)
    out = work / "train.zarr"
    extract.run(tiny_extract(data, out, views="2x1", sampling="train"))
    return out


def device_tensors(trainer: Trainer, data, text: torch.Tensor) -> list[torch.Tensor]:
    """What lives on the GPU in a CUDA run: weights, buffers, optimiser and scaler state, the
    class text, the resident features."""
    tensors = [*trainer.losses.parameters(), *trainer.losses.buffers(), text]
    tensors += optimizer_tensors(trainer.optimizer)
    if trainer.scaler is not None and trainer.scaler._scale is not None:
        tensors += [trainer.scaler._scale, trainer.scaler._growth_tracker]
    resident = getattr(data, "resident", None)
    if resident is not None:
        tensors += [resident.features, resident.labels]
    return tensors


@pytest.fixture
def watched(monkeypatch):
    """Run every ``Trainer.run_steps`` under ``DeviceWaits``; returns the list of them."""
    seen: list[DeviceWaits] = []
    original = Trainer.run_steps

    def run_steps(self, data, text, epoch):
        with DeviceWaits(device_tensors(self, data, text)) as waits:
            totals = original(self, data, text, epoch)
        seen.append(waits)
        return totals

    monkeypatch.setattr(Trainer, "run_steps", run_steps)
    return seen


CASES = {
    "fused fp32": {},
    "no WMR (unrouted experts dropped)": {"wmr": False, "micro_batches": 2},
    "per micro-batch (--no-fused)": {"fused": False},
    "fp16 autocast + loss scaler": {"precision": "fp16"},
    "bf16 autocast": {"precision": "bf16"},
    "compiled (aot_eager)": {"compile": True},
    "transformer": {"arch": "transformer"},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_training_steps_never_wait_for_the_device(store, tmp_path, watched, overrides):
    settings = dict(
        train=store,
        out=tmp_path / "run",
        layers=1,
        epochs=2,
        warmup_epochs=1,
        batch_size=7,  # 24 videos: 3 full steps and an uneven last one per epoch
        lr=1e-3,
        device="cpu",
    )
    train_temporal.run(train_temporal.TrainConfig(**{**settings, **overrides}))
    assert len(watched) == 2  # one per epoch
    for waits in watched:
        assert waits.ops > 100  # the steps really ran under the probe
        assert waits.calls == [], waits.calls


def test_the_probe_catches_a_host_read_inside_a_step(store, tmp_path, watched, monkeypatch):
    """The negative control: a step that reads its loss on the host is caught."""
    from mote.pipeline.train import step as step_module

    original = step_module.fused_step

    def reading_step(*args, **kwargs):
        sums, correct = original(*args, **kwargs)
        float(sums["total"])  # what a careless progress bar would do
        return sums, correct

    monkeypatch.setattr(step_module, "fused_step", reading_step)
    monkeypatch.setattr("mote.pipeline.train.loop.fused_step", reading_step)
    settings = dict(train=store, out=tmp_path / "run", layers=1, epochs=1, warmup_epochs=1)
    train_temporal.run(train_temporal.TrainConfig(**settings, batch_size=8, device="cpu"))
    assert watched[0].calls.count("Tensor.__float__") == 3  # one per step


def test_validation_batches_never_wait_for_the_device(store):
    """Per-epoch validation: one host read per call (the final top-1), whatever the batches."""
    from mote.cache_schema.feature_store import FeatureStore
    from mote.pipeline.temporal.features import InMemoryFeatures
    from mote.pipeline.temporal.mote_model import MoTE
    from mote.pipeline.temporal.temporal_config import default_config
    from mote.pipeline.train.feature_batches import ValidationView

    features = InMemoryFeatures(FeatureStore.open(store))
    torch.manual_seed(0)
    model = MoTE(default_config(features.embeddings.shape[-1], layers=1)).eval()
    text = torch.nn.functional.normalize(torch.randn(8, features.embeddings.shape[-1]), dim=-1)
    view = ValidationView(features, 1, torch.device("cpu"), float("inf"))
    with DeviceWaits([*model.parameters(), *model.buffers(), text]) as waits:
        waits.add([view.resident.features, view.resident.labels])
        train_temporal._val_top1(model, view, text, "cpu", batch_videos=5)  # 5 batches
    assert waits.ops > 50
    assert waits.calls == ["Tensor.item"], waits.calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_finetune_e2e_steps_never_wait_for_the_device(tmp_path, watched, precision):
    """The end-to-end step: uint8 clips normalised on the device, the CLIP tower, MoTE."""
    from mote.stages import finetune_e2e

    data = write_motion_dataset(tmp_path / "videos", videos_per_class=1, seed=6)
    cfg = finetune_e2e.FinetuneConfig(
        dataset="list",
        root=data.root,
        list_file=data.list_file,
        labels_file=data.labels_file,
        out=tmp_path / "run",
        model="mote-tiny",
        pretrained="none",
        device="cpu",
        frames=4,
        layers=1,
        workers=0,
        epochs=2,
        warmup_epochs=1,
        batch_size=3,  # 8 videos: 2 full steps and an uneven last one
        precision=precision,
    )
    finetune_e2e.run(cfg)
    assert len(watched) == 2
    for waits in watched:
        assert waits.ops > 100
        assert waits.calls == [], waits.calls


@pytest.mark.parametrize("precision, expected", [("fp32", "ieee"), ("bf16", "tf32")])
def test_tf32_matmuls_only_inside_mixed_precision_steps(
    store, tmp_path, monkeypatch, precision, expected
):
    """TF32 where the spec's precision allows it: mixed-precision training steps; never for
    --precision fp32, and validation/evaluation stay IEEE float32 (spec 7)."""
    before = torch.backends.cuda.matmul.fp32_precision
    seen: list[tuple[str, str]] = []
    original = Trainer.run_steps

    def run_steps(self, data, text, epoch):
        seen.append(
            (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        )
        return original(self, data, text, epoch)

    monkeypatch.setattr(Trainer, "run_steps", run_steps)
    settings = dict(train=store, val=store, out=tmp_path / "run", layers=1, epochs=1)
    validation: list[str] = []
    real_val = train_temporal._val_top1

    def val_top1(*args, **kwargs):
        validation.append(torch.backends.cuda.matmul.fp32_precision)
        return real_val(*args, **kwargs)

    monkeypatch.setattr(train_temporal, "_val_top1", val_top1)
    train_temporal.run(
        train_temporal.TrainConfig(
            **settings, warmup_epochs=1, batch_size=8, device="cpu", precision=precision
        )
    )
    assert seen == [(expected, expected)]
    assert validation == [before]  # evaluation keeps the caller's (default IEEE) setting
    assert torch.backends.cuda.matmul.fp32_precision == before
