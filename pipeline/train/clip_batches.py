"""finetune-e2e's data for the shared training loop: each rank's share of every global batch
of decoded clips (``VideoBatches``, the loop's ``EpochData``), the visual tower as the loop's
feature function (``FrameFeatures``), validation scores with one host copy (``predict_clips``)
and the videos that could not be decoded (``FailureLog``, ``RUN/failures.jsonl``)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mote.pipeline.errors import Unreachable
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.e2e import EndToEnd
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.loop import StepBatch
from mote.pipeline.train.sampler import ShardedBatchSampler
from mote.pipeline.video.clips import ClipDataset, ClipFailure, make_loader


class FailureLog:
    """Videos that could not be decoded: gathered from every rank, each listed once (rank 0
    appends them to ``RUN/failures.jsonl`` with the reason; resumed runs keep the list)."""

    def __init__(self, folder: RunFolder, ctx: DistContext) -> None:
        self.folder, self.ctx = folder, ctx
        self.seen: set[tuple[str, str]] = set()
        self.count = {"train": 0, "val": 0}

    def load(self) -> None:
        for row in self.folder.read_failures():
            self._mark(row.get("split", "train"), row["video"])

    def _mark(self, split: str, video: str) -> bool:
        if (split, video) in self.seen:
            return False
        self.seen.add((split, video))
        self.count[split] = self.count.get(split, 0) + 1
        return True

    def record(self, split: str, epoch: int, failed: list[ClipFailure], gather: bool) -> list:
        """A collective when ``gather`` (every rank calls it); returns the new failures. A
        video whose server could not be reached stops training (``Unreachable``, exit 4)."""
        for failure in failed:
            if failure.unreachable:
                raise Unreachable(failure.reason)
        everyone = self.ctx.gather(failed) if gather else [failed]
        if not self.ctx.is_main:
            return []
        rows = []
        for failure in (f for rank in everyone for f in rank):
            if self._mark(split, failure.video):
                rows.append(
                    {
                        "split": split,
                        "video": failure.video,
                        "reason": failure.reason,
                        "epoch": epoch + 1,
                    }  # fmt: skip
                )
        self.folder.append_failures(rows)
        return rows


class VideoBatches:
    """This rank's share of each global batch of training clips (the loop's ``EpochData``):
    the shared-seed sharded sampler over the list, decoded by the clip loader's workers.

    Failed videos leave their batch (the step trains on the rest) and are logged at the end
    of the epoch."""

    def __init__(
        self,
        dataset: ClipDataset,
        batch_size: int,
        micro_batches: int,
        ctx: DistContext,
        seed: int,
        workers: int,
        failures: FailureLog,
        on_failure=None,
    ) -> None:
        self.sampler = ShardedBatchSampler(
            len(dataset), batch_size, micro_batches, ctx.rank, ctx.world_size, seed
        )
        self.loader = make_loader(
            dataset,
            batch_sampler=self.sampler,
            workers=workers,
            pin_memory=ctx.device.type == "cuda",
            seed=seed + ctx.rank,
        )
        self.failures, self.on_failure, self.epoch = failures, on_failure, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[StepBatch]:
        failed: list[ClipFailure] = []
        # The global batch's size as sampled: a video that fails to decode leaves its share,
        # not the count (which only matters for a global batch smaller than its micro-batches).
        sizes = [len(batch) for batch in self.sampler.global_batches()]
        for batch, global_size in zip(self.loader, sizes, strict=True):
            failed += batch.failed
            yield StepBatch(batch.frames, batch.labels, global_size)
        new = self.failures.record("train", self.epoch, failed, gather=True)
        if new and self.on_failure is not None:
            self.on_failure(new)


class FrameFeatures(torch.nn.Module):
    """The loop's feature function: ``model.encode_frames``. An ``nn.Module`` holding the visual
    tower, so the ranks sum the tower's gradients and the checkpoint holds its weights."""

    def __init__(self, model: EndToEnd) -> None:
        super().__init__()
        self.visual = model.visual  # the same module: registered for the gradient sync, checkpoints
        object.__setattr__(self, "_model", model)  # not a submodule (no second temporal copy)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self._model.encode_frames(frames)


@torch.no_grad()
def predict_clips(
    model: EndToEnd, loader, failures: FailureLog, epoch: int, tfm: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine logits (N, C) and labels of the decodable validation clips (fp32, spec 7), on
    the CPU. The uint8 clips go to the device asynchronously and the scores stay there until
    one copy at the end, so no batch waits for the device; labels never leave the host."""
    device = model.class_text.device
    scores, labels, failed = [], [], []
    for batch in loader:
        failed += batch.failed
        if len(batch):
            logits, _ = model.predict(batch.frames.to(device, non_blocking=True), tfm=tfm)
            scores.append(logits.float())
            labels.append(batch.labels)
    failures.record("val", epoch, failed, gather=False)
    if not scores:
        return torch.zeros(0, len(model.class_names)), torch.zeros(0, dtype=torch.long)
    return torch.cat(scores).cpu(), torch.cat(labels)
