"""Cached features where the training step runs: batches gathered on the device, no waiting.

A training store of K400 at D=512 (8 frames, one view) is about 2 GB in float16: it fits on any
training GPU. Kept there, a step's batch is one gather on the GPU from an index plan copied once
per epoch, instead of a numpy gather on the host and a copy from pageable memory that makes the
host wait for the GPU every step. When the store does not fit (``--device-memory-gb``), batches
are gathered on the host into pinned buffers and copied without waiting. On the CPU the RAM copy
is the resident one: the same code path, which is what CI runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mote.pipeline.temporal.features import InMemoryFeatures, StreamingFeatures
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.loop import StepBatch
from mote.pipeline.train.sampler import ShardedBatchSampler, rank_share
from mote.pipeline.train.train_settings import steps_per_epoch

GIB = 2**30


def device_budget(device: torch.device, memory_gb: float | None) -> float:
    """Bytes of cached features allowed on ``device``: ``memory_gb``, else half of the GPU
    memory free now; unbounded on the CPU (the features are in RAM already)."""
    if device.type != "cuda":
        return float("inf")
    if memory_gb is not None:
        return memory_gb * GIB
    free, _ = torch.cuda.mem_get_info(device)
    return free / 2


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to CUDA through pinned memory, so the host does not wait."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class ResidentFeatures:
    """Every stored view of the training videos as one (N V, T, D) float16 tensor, with the
    labels (N,), on the device when they fit ``budget`` bytes (else in pinned host memory)."""

    def __init__(
        self, embeddings: np.ndarray, labels: np.ndarray, device: torch.device, budget: float
    ) -> None:
        n, views = embeddings.shape[:2]
        flat = torch.from_numpy(np.ascontiguousarray(embeddings)).view(
            n * views, *embeddings.shape[2:]
        )
        label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.views, self.device = views, device
        self.on_device = device.type != "cuda" or flat.nbytes + label_tensor.nbytes <= budget
        if self.on_device:
            self.features = flat.to(device)
            self.labels = label_tensor.to(device)
        else:
            self.features, self.labels = flat.pin_memory(), label_tensor.pin_memory()

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.labels.nbytes

    def plan(self, rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
        """An epoch's picks (video row, view) as a (2, K) index tensor where the gather runs:
        one copy per epoch instead of one per step."""
        index = np.stack([rows * self.views + views, rows]).astype(np.int64)
        plan = torch.from_numpy(index)
        return _to_device(plan, self.device) if self.on_device else plan

    def gather(
        self, plan: torch.Tensor, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (k, T, D) and labels (k,) of picks ``start:stop`` of ``plan``, on the device."""
        flat, rows = plan[0, start:stop], plan[1, start:stop]
        if self.on_device:
            return self.features.index_select(0, flat), self.labels.index_select(0, rows)
        k = stop - start
        features = torch.empty(
            (k, *self.features.shape[1:]), dtype=self.features.dtype, pin_memory=True
        )
        labels = torch.empty((k,), dtype=self.labels.dtype, pin_memory=True)
        torch.index_select(self.features, 0, flat, out=features)
        torch.index_select(self.labels, 0, rows, out=labels)
        # The caching host allocator keeps a pinned buffer until its copy is done: no wait here.
        return (
            features.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
        )


class FeatureBatches:
    """This rank's share of each global batch of cached features (the loop's ``EpochData``).

    In memory: the shared-seed sampler over the epoch's samples, each with a view drawn from
    (seed, epoch), so every rank agrees; batches gathered from ``ResidentFeatures``. Streamed:
    every rank reads the same blocks in the same order and keeps its share of each batch
    (simple; each rank reads the whole store).
    """

    def __init__(
        self,
        source: InMemoryFeatures | StreamingFeatures,
        batch_size: int,
        micro_batches: int,
        ctx: DistContext,
        seed: int,
        device_memory_gb: float | None = None,
    ) -> None:
        self.batch_size, self.micro_batches = batch_size, micro_batches
        self.ctx, self.seed, self.epoch = ctx, seed, 0
        self.size = len(source)
        self.sampler = ShardedBatchSampler(
            self.size, batch_size, micro_batches, ctx.rank, ctx.world_size, seed
        )
        self.streamed = source if isinstance(source, StreamingFeatures) else None
        self.resident = None
        if isinstance(source, InMemoryFeatures):
            budget = device_budget(ctx.device, device_memory_gb)
            self.resident = ResidentFeatures(source.embeddings, source.labels, ctx.device, budget)
            self.videos = len(source.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return steps_per_epoch(self.size, self.batch_size)

    def __iter__(self) -> Iterator[StepBatch]:
        if self.resident is not None:
            yield from self._resident_batches(self.resident)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        for features, labels in self.streamed.batches(self.batch_size, rng):
            share = rank_share(len(labels), self.micro_batches, self.ctx.rank, self.ctx.world_size)
            yield StepBatch(
                _to_device(torch.from_numpy(features[share]), self.ctx.device),
                _to_device(torch.from_numpy(labels[share]), self.ctx.device),
                len(labels),
            )

    def epoch_picks(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """This rank's picks of the epoch in step order: video rows, views, and per step
        (start, stop, global batch size)."""
        n, views = self.videos, self.resident.views
        rows = np.arange(self.size)
        if self.size != n:  # few-shot --epoch-size: fresh passes over the videos, cut to size
            rng = np.random.default_rng([self.seed, self.epoch, 2])
            rows = np.concatenate([rng.permutation(n) for _ in range(-(-self.size // n))])
            rows = rows[: self.size]
        view = np.random.default_rng([self.seed, self.epoch, 1]).integers(views, size=self.size)
        picked, steps, start = [], [], 0
        for positions, global_size in self.sampler.steps():
            picked.append(positions)
            steps.append((start, start + len(positions), global_size))
            start += len(positions)
        positions = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        return rows[positions], view[positions], steps

    def _resident_batches(self, resident: ResidentFeatures) -> Iterator[StepBatch]:
        rows, views, steps = self.epoch_picks()
        plan = resident.plan(rows, views)
        for start, stop, global_size in steps:
            features, labels = resident.gather(plan, start, stop)
            yield StepBatch(features, labels, global_size)


class ValidationView:
    """One view of every validation video (spec 7: the first clip's centre crop) and the
    labels, put on the device once per run when they fit (else copied per batch from pinned
    memory), so a per-epoch validation makes no host-to-device copy per batch."""

    def __init__(
        self, features: InMemoryFeatures, view: int, device: torch.device, budget: float
    ) -> None:
        self.videos = len(features)
        self.device = device
        self.resident = ResidentFeatures(
            features.embeddings[:, view : view + 1], features.labels, device, budget
        )

    def __len__(self) -> int:
        return self.videos

    def blocks(self, batch_videos: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features (k, T, D) float16, labels (k,)) on the device, ``batch_videos`` at a time."""
        if self.resident.on_device:
            for start in range(0, self.videos, batch_videos):
                stop = min(start + batch_videos, self.videos)
                yield self.resident.features[start:stop], self.resident.labels[start:stop]
            return
        rows = np.arange(self.videos)
        plan = self.resident.plan(rows, np.zeros_like(rows))
        for start in range(0, self.videos, batch_videos):
            yield self.resident.gather(plan, start, min(start + batch_videos, self.videos))
