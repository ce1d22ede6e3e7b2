"""Training and validation clips for end-to-end fine-tuning, decoded in DataLoader workers.

``ClipDataset`` item i is video i of a list: it is decoded with ``open_video`` (decord with one
thread, PyAV fallback), sampled by spec 7.1 and preprocessed by spec 7.2 (``mode="train"``) or
7.3 (``mode="eval"``: 1 clip, shorter side to S with the model's filter, centre crop). Clips stay
uint8 (T, S, S, 3): a quarter of the bytes of float32 through the worker pipes, pinned memory and
the host-to-device copy; the model normalises them on its device (``EndToEnd.encode_frames``
calls ``transforms.normalize``, the same fp32 ops the workers used to run). The item's
randomness comes from ``item_rng(seed, epoch, index)`` alone, so a clip does not depend on which
worker decodes it, on the number of workers, or on the order of the batches. A training clip
that the draw flips left-right takes the label its dataset's ``FlipRule`` gives (spec 8.3: SSv2's
left/right pairs swap), or is never flipped when the rule turns flips off.

A video that cannot be decoded gives a ``ClipFailure`` instead of raising; ``ClipDataset.collate``
drops failures from the batch and carries them in ``ClipBatch.failed`` for the training loop to
count and list. ``make_loader`` builds the DataLoader: worker processes with one torch thread
each, persistent workers, pinned memory on CUDA, prefetch, and any batch sampler (for example
a shared-seed distributed one). The epoch travels with every index from the main process to the
workers, so persistent workers never see a stale epoch.

This module imports torch; ``decode``, ``sampling``, ``transforms`` and ``augment`` do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mote.pipeline.errors import DecodeError, Unreachable
from mote.pipeline.locations import join, locate
from mote.pipeline.threads import use_worker_threads
from mote.pipeline.video.augment import AREA_RANGE, augment_clip
from mote.pipeline.video.decode import Backend, open_video
from mote.pipeline.video.flips import KEEP_LABELS, FlipRule
from mote.pipeline.video.sampling import sample_indices
from mote.pipeline.video.transforms import PreprocessSpec, crop_views

Mode = Literal["train", "eval"]


class _Item(Protocol):
    """What a list entry needs (``pipeline.data.datasets.VideoItem`` has it)."""

    video_id: str
    label: int


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: frame sampling first, then augmentation."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass
class ClipSample:
    """One decoded clip: uint8 (T, S, S, 3) frames (not normalised), its label and list index."""

    frames: torch.Tensor
    label: int
    index: int
    frame_indices: np.ndarray  # int64 (T,), the decoded frames (spec 7.1)


class ClipFailure(NamedTuple):
    """A video that could not be decoded: its list index, its id (path under root), why."""

    index: int
    video: str
    reason: str
    unreachable: bool = False  # its server could not be reached: training stops (exit 4)


@dataclass
class ClipBatch:
    """Collated clips; ``failed`` lists the videos of this batch that could not be decoded."""

    frames: torch.Tensor  # uint8 (B, T, S, S, 3); B may be 0 when every video failed
    labels: torch.Tensor  # int64 (B,)
    indices: torch.Tensor  # int64 (B,), list indices
    frame_indices: torch.Tensor  # int64 (B, T)
    failed: list[ClipFailure]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> ClipBatch:
        """Called by the DataLoader's pin-memory thread (``pin_memory=True``)."""
        return ClipBatch(
            self.frames.pin_memory(),
            self.labels.pin_memory(),
            self.indices,
            self.frame_indices,
            self.failed,
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> ClipBatch:
        """Frames and labels on ``device`` (asynchronous from pinned memory)."""
        return ClipBatch(
            self.frames.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.indices,
            self.frame_indices,
            self.failed,
        )


class ClipDataset(Dataset):
    """Video clips of a list: ``mode="train"`` (spec 7.1 random + 7.2) or ``"eval"`` (7.1 + 7.3).

    ``items`` are ``VideoItem``s (``DatasetSpec.items``) or anything with ``video_id`` and
    ``label``; paths are ``root / video_id`` (``root`` may be a URL prefix: each video is
    spilled to a temporary file while it decodes, ``remote.py``). ``dataset[i]`` uses the
    epoch of ``set_epoch``;
    ``dataset[(epoch, i)]`` names the epoch explicitly (what ``make_loader`` sends to workers).
    ``flip`` is the dataset's ``FlipRule`` (``DatasetSpec.flip``): what a flipped training clip's
    label becomes, or that clips are never flipped. ``min_crop_area``: the smallest training
    crop as a share of the frame (spec 7.2: 0.08).
    """

    def __init__(
        self,
        items: Sequence[_Item],
        root: str | Path,
        spec: PreprocessSpec,
        frames: int = 8,
        mode: Mode = "train",
        seed: int = 0,
        backend: Backend = "auto",
        flip: FlipRule = KEEP_LABELS,
        min_crop_area: float = AREA_RANGE[0],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"unknown clip mode {mode!r}: use 'train' or 'eval'.")
        if frames < 1:
            raise ValueError(f"frames per clip must be >= 1, got {frames}.")
        self.videos = tuple(str(item.video_id) for item in items)
        self.labels = tuple(int(item.label) for item in items)
        self.root = locate(root)  # a folder, or a URL prefix the ids are joined to
        self.storage_options = storage_options
        self.spec = spec
        self.frames = int(frames)
        self.mode: Mode = mode
        self.seed = int(seed)
        self.backend: Backend = backend
        self.flip = flip
        self.min_crop_area = float(min_crop_area)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New random draws for every item (train mode); eval clips do not depend on it."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: int | tuple[int, int]) -> ClipSample | ClipFailure:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        if not 0 <= index < len(self.videos):
            raise IndexError(f"clip index {index} out of range for {len(self.videos)} videos")
        try:
            return self._load(index, epoch)
        except Unreachable as error:  # the video may be fine: not recorded as failed
            return ClipFailure(index, self.videos[index], str(error), unreachable=True)
        except DecodeError as error:
            return ClipFailure(index, self.videos[index], str(error) or "decode error")
        except MemoryError:
            return ClipFailure(index, self.videos[index], "out of memory while decoding")
        except Exception as error:  # noqa: BLE001 (one bad video must never stop training)
            reason = f"unexpected {type(error).__name__} while decoding: {error}"
            return ClipFailure(index, self.videos[index], reason)

    def _load(self, index: int, epoch: int) -> ClipSample:
        """Decode, sample and crop (or augment) one video to uint8; decoding problems raise
        DecodeError. Normalising is left to the model's device."""
        rng = item_rng(self.seed, epoch, index) if self.mode == "train" else None
        path = join(self.root, self.videos[index])
        with open_video(path, self.backend, self.storage_options) as video:
            if video.num_frames < 1:
                raise DecodeError("no frames")
            frame_indices = sample_indices(video.num_frames, self.frames, 1, self.mode, rng)[0]
            decoded = video.get(frame_indices)  # uint8 (T, H, W, 3)
        size, label = self.spec.size, self.labels[index]
        if self.mode == "train":
            clip, params = augment_clip(
                decoded, size, rng, flip=self.flip.enabled, min_area=self.min_crop_area
            )
            label = self.flip.label(label, params.flip)
        else:
            clip = crop_views(decoded, size, 1, self.spec.interpolation)[0]
        return ClipSample(torch.from_numpy(clip), label, index, frame_indices)

    def collate(self, items: Sequence[ClipSample | ClipFailure]) -> ClipBatch:
        """Stack the decoded clips; failures leave the batch and go to ``failed``."""
        ok = [item for item in items if isinstance(item, ClipSample)]
        failed = [item for item in items if isinstance(item, ClipFailure)]
        size = self.spec.size
        if ok:
            frames = torch.stack([item.frames for item in ok])
            frame_indices = torch.from_numpy(np.stack([item.frame_indices for item in ok]))
        else:
            frames = torch.empty((0, self.frames, size, size, 3), dtype=torch.uint8)
            frame_indices = torch.empty((0, self.frames), dtype=torch.int64)
        return ClipBatch(
            frames=frames,
            labels=torch.tensor([item.label for item in ok], dtype=torch.int64),
            indices=torch.tensor([item.index for item in ok], dtype=torch.int64),
            frame_indices=frame_indices.to(torch.int64),
            failed=failed,
        )


class EpochBatches:
    """Batches of list indices, reshuffled per epoch from (seed, epoch); the last one is kept.

    Single-process order when no external batch sampler is given (spec 7: reshuffled every
    epoch, last partial batch kept). ``shuffle=False`` keeps list order (validation).
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.length, self.batch_size = int(length), int(batch_size)
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.length // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        for start in range(0, self.length, self.batch_size):
            yield order[start : start + self.batch_size].tolist()


class _WithEpoch:
    """Wrap a batch sampler so each index carries the dataset's epoch into the workers."""

    def __init__(self, batches: Iterable[list[int]], dataset: ClipDataset) -> None:
        self.batches = batches
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.dataset.epoch  # read in the main process when the epoch's iteration starts
        for batch in self.batches:
            yield [(epoch, int(i)) for i in batch]


class ClipLoader(DataLoader):
    """A DataLoader of ``ClipBatch``es; call ``set_epoch(e)`` before iterating epoch e."""

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the dataset (the clips' draws) and of the batch sampler (order)."""
        self.dataset.set_epoch(epoch)
        inner = self.batch_sampler.batches
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)


def _worker_init(worker_id: int) -> None:
    """One torch thread per decode worker (decord already decodes with one thread)."""
    use_worker_threads()


def make_loader(
    dataset: ClipDataset,
    batch_size: int | None = None,
    batch_sampler: Iterable[list[int]] | None = None,
    workers: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
    seed: int = 0,
    shuffle: bool = True,
    context: str | None = None,
) -> ClipLoader:
    """A loader over ``dataset``: give ``batch_size`` (``EpochBatches``) or a ``batch_sampler``.

    ``workers`` decode processes (0 = in this process), persistent across epochs, each with one
    torch thread; ``prefetch_factor`` batches queued per worker; ``pin_memory`` defaults to
    ``torch.cuda.is_available()``. The loader has its own torch generator (from ``seed``) so
    iterating it never consumes the global torch RNG that routing and dropout use.
    ``context`` is the workers' start method (None: torch's default, fork on Linux).
    """
    if (batch_size is None) == (batch_sampler is None):
        raise ValueError("make_loader needs exactly one of batch_size and batch_sampler.")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}.")
    if batch_sampler is None:
        batch_sampler = EpochBatches(len(dataset), int(batch_size), seed=seed, shuffle=shuffle)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = dict(
            worker_init_fn=_worker_init,
            persistent_workers=True,
            prefetch_factor=prefetch_factor,
            multiprocessing_context=context,
        )
    return ClipLoader(
        dataset,
        batch_sampler=_WithEpoch(batch_sampler, dataset),
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(int(seed)),
        **extra,
    )
