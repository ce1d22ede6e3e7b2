"""Per-epoch validation and the final scoring: batched, equal to a video-by-video computation,
and sync-free (one device-to-host transfer per call, whatever the number of batches)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from mote.pipeline.temporal.evaluation import score_views
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.stages import train_temporal

D, CLASSES, VIDEOS, VIEWS = 32, 5, 50, 3
# Each one waits for the device. (``tolist`` is left out: MoTE's merge turns CPU-resident
# coefficients into floats with it, a path that never runs on a GPU.)
HOST_READS = {"cpu", "item", "numpy"}


@dataclass
class Features:
    embeddings: np.ndarray  # (N, V, T, D) fp16, as InMemoryFeatures holds them
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class HostReads(TorchFunctionMode):
    """Counts the tensor calls that copy a result to the host (a sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def model_and_data() -> tuple[MoTE, torch.Tensor, Features]:
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=1)).eval()
    text = torch.nn.functional.normalize(torch.randn(CLASSES, D), dim=-1)
    model.set_finetune_text(torch.randn(2 * CLASSES, D))  # TFM's bank, for the scoring test
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((VIDEOS, VIEWS, 8, D)).astype(np.float16)
    labels = rng.integers(CLASSES, size=VIDEOS)
    return model, text, Features(embeddings, labels)


def one_by_one_top1(model: MoTE, text: torch.Tensor, features: Features, view: int) -> float:
    """The independent computation: each video alone through ``predict``."""
    correct = 0
    with torch.no_grad():
        for i in range(len(features)):
            e = torch.from_numpy(features.embeddings[i : i + 1, view]).float()
            logits, _ = model.predict(e, text, tfm=False)
            correct += int(logits.argmax(dim=1).item() == features.labels[i])
    return 100.0 * correct / len(features)


def test_per_epoch_validation_equals_video_by_video_top1():
    model, text, features = model_and_data()
    # make the labels follow view 2's predictions for most videos, so the top-1 is far from
    # chance and reading another view (or dropping the partial last batch) changes it
    with torch.no_grad():
        e = torch.from_numpy(features.embeddings[:, 2]).float()
        predicted = model.predict(e, text)[0].argmax(dim=1).numpy()
    features.labels[:40] = predicted[:40]
    expected = one_by_one_top1(model, text, features, view=2)
    assert expected >= 80.0
    for batch in (7, 16, 4096):  # several batches with a partial last one, and a single batch
        got = train_temporal._val_top1(model, features, text, "cpu", view=2, batch_videos=batch)
        assert abs(got - expected) < 1e-9, (batch, got, expected)
    assert train_temporal._val_top1(model, features, text, "cpu", view=0) != expected


def test_validation_reads_the_host_once_whatever_the_batches():
    model, text, features = model_and_data()
    with HostReads() as reads:
        train_temporal._val_top1(model, features, text, "cpu", view=1, batch_videos=8)
    assert reads.calls == ["item"], reads.calls  # 7 batches, one read at the end


def test_scoring_is_batched_and_reads_the_host_once():
    model, text, features = model_and_data()
    whole, whole_rho = score_views(model, features.embeddings, text, tfm=True)
    with HostReads() as reads:
        logits, rho = score_views(model, features.embeddings, text, tfm=True, batch_videos=8)
    assert reads.calls == ["cpu", "cpu"], reads.calls  # logits and rho, after 7 batches
    assert logits.shape == (VIDEOS, VIEWS, CLASSES) and rho.shape == (VIDEOS, VIEWS)
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rho, whole_rho, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and each video's logits are its own views' predict, one by one
        e = torch.from_numpy(features.embeddings[13]).float()
        alone, _ = model.predict(e, torch.nn.functional.normalize(text, dim=-1), tfm=True)
    torch.testing.assert_close(logits[13], alone, rtol=1e-5, atol=1e-6)
