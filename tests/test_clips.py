"""End-to-end training clips: decode + spec 7.1 sampling + 7.2/7.3 preprocessing in workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import worker_normalised

from mote.pipeline.data.datasets import VideoItem
from mote.pipeline.data.synthetic import write_frames, write_numbered_video
from mote.pipeline.video.augment import augment_clip
from mote.pipeline.video.clips import (
    ClipDataset,
    ClipFailure,
    ClipSample,
    EpochBatches,
    item_rng,
    make_loader,
)
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.sampling import sample_indices
from mote.pipeline.video.transforms import PreprocessSpec, crop_views, normalize

T = 8


def _tiny_spec() -> PreprocessSpec:
    """mote-tiny's input: 64 px and open_clip's OpenAI mean/std (imported after mote, whose
    package import arms the torchvision shim open_clip needs)."""
    import open_clip

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return PreprocessSpec(size=64, mean=tuple(mean), std=tuple(std))


SPEC = _tiny_spec()


@dataclass(frozen=True)
class Videos:
    root: Path
    items: tuple[VideoItem, ...]
    broken: dict[int, str]  # list index -> a word the failure reason contains


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    """Six real videos of different lengths and sizes, plus a random-bytes and a cut file."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    good = []
    for k, (n, size) in enumerate([(40, (64, 48)), (57, (96, 64)), (5, (64, 48)), (23, (48, 64))]):
        write_numbered_video(root / f"num{k}.mp4", n, size=size)
        good.append(f"num{k}.mp4")
    for k in range(2):
        noise = rng.integers(0, 256, size=(30, 48, 80, 3), dtype=np.uint8)
        write_frames(root / f"noise{k}.mp4", noise, preset="ultrafast")
        good.append(f"noise{k}.mp4")
    (root / "random.mp4").write_bytes(rng.bytes(20_000))
    whole = write_numbered_video(root / "whole.mp4", 60, size=(64, 48)).read_bytes()
    (root / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    names = good[:3] + ["random.mp4"] + good[3:5] + ["cut.mp4"] + good[5:]
    items = tuple(VideoItem(name, label % 3) for label, name in enumerate(names))
    return Videos(root, items, {3: "cannot open", 6: "truncated"})


def _decode(path: Path, indices: np.ndarray) -> np.ndarray:
    with open_video(path) as video:
        return video.get(indices)


def test_train_items_follow_spec_7_1_sampling_and_7_2_augmentation(videos: Videos) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, seed=11)
    dataset.set_epoch(2)
    for i, item in enumerate(videos.items):
        if i in videos.broken:
            continue
        sample = dataset[i]
        assert isinstance(sample, ClipSample)
        assert sample.frames.shape == (T, 64, 64, 3) and sample.frames.dtype == torch.uint8
        assert (sample.label, sample.index) == (item.label, i)
        path = videos.root / item.video_id
        with open_video(path) as video:
            n = video.num_frames
        rng = item_rng(11, 2, i)  # sampling first, then augmentation, from one generator
        indices = sample_indices(n, T, 1, "train", rng)[0]
        np.testing.assert_array_equal(sample.frame_indices, indices)
        clip, _ = augment_clip(_decode(path, indices), 64, rng)
        assert torch.equal(sample.frames, torch.from_numpy(clip))


def test_train_draws_change_with_the_epoch_and_repeat_within_it(videos: Videos) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, seed=0)
    first = dataset[1]
    again = dataset[(0, 1)]
    later = dataset[(5, 1)]
    assert torch.equal(first.frames, again.frames)
    assert not torch.equal(first.frames, later.frames)
    dataset.set_epoch(5)
    assert torch.equal(dataset[1].frames, later.frames)


def test_eval_items_use_spec_7_1_eval_indices_and_7_3_centre_crop(videos: Videos) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, mode="eval", seed=3)
    for i in (0, 1, 2):
        path = videos.root / videos.items[i].video_id
        with open_video(path) as video:
            n = video.num_frames
        sample = dataset[(7, i)]
        indices = sample_indices(n, T, 1, "eval")[0]
        np.testing.assert_array_equal(sample.frame_indices, indices)
        expected = torch.from_numpy(
            crop_views(_decode(path, indices), 64, 1, SPEC.interpolation)[0]
        )
        assert sample.frames.dtype == torch.uint8 and torch.equal(sample.frames, expected)
        assert torch.equal(dataset[(0, i)].frames, expected)  # no epoch dependence


def test_broken_videos_give_failure_records(videos: Videos) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T)
    for i, word in videos.broken.items():
        failure = dataset[i]
        assert isinstance(failure, ClipFailure)
        assert failure.index == i and failure.video == videos.items[i].video_id
        assert word in failure.reason
    missing = ClipDataset([VideoItem("nowhere.mp4", 0)], videos.root, SPEC)[0]
    assert missing == ClipFailure(0, "nowhere.mp4", "file not found")
    empty = dataset.collate([dataset[3], dataset[6]])
    assert len(empty) == 0 and empty.frames.shape == (0, T, 64, 64, 3)
    assert empty.frames.dtype == torch.uint8 and empty.to("cpu").frames.dtype == torch.uint8
    assert [f.index for f in empty.failed] == [3, 6]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_device_normalisation_equals_the_old_worker_normalisation_exactly(
    videos: Videos, mode: str
) -> None:
    """Workers send uint8 clips; normalised where the model is, they are bit for bit the float
    clips the workers used to send (pinned and copied asynchronously on CUDA)."""
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, mode=mode, seed=2)
    loader = make_loader(dataset, batch_size=3, workers=2, seed=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader.set_epoch(1)
    seen = 0
    for batch in loader:
        if device.type == "cuda":
            assert batch.frames.is_pinned() and batch.labels.is_pinned()
        frames = batch.to(device).frames
        assert frames.dtype == torch.uint8 and frames.shape == (len(batch), T, 64, 64, 3)
        ours = normalize(frames, SPEC, torch.float32)
        assert ours.shape == (len(batch), T, 3, 64, 64) and ours.device.type == device.type
        for clip, i in zip(ours.cpu(), batch.indices.tolist(), strict=True):
            assert torch.equal(clip, worker_normalised(dataset[(1, i)].frames, SPEC))
        seen += len(batch)
    assert seen == len(videos.items) - len(videos.broken)


def _epochs(loader, epochs: int = 2) -> list[list]:
    """Per epoch: (indices, labels, frames, failed) of every batch, in order."""
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.append([(b.indices, b.labels, b.frames, b.failed) for b in loader])
    return out


def test_loader_skips_and_reports_failures_identically_with_and_without_workers(
    videos: Videos,
) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, seed=4)
    serial = _epochs(make_loader(dataset, batch_size=3, workers=0, seed=9))
    parallel = _epochs(make_loader(dataset, batch_size=3, workers=2, seed=9, prefetch_factor=2))
    assert len(serial) == len(parallel) == 2
    for ours, theirs in zip(serial, parallel, strict=True):
        assert len(ours) == len(theirs) == 3  # 8 videos in batches of 3, last partial kept
        for (i1, l1, f1, x1), (i2, l2, f2, x2) in zip(ours, theirs, strict=True):
            assert torch.equal(i1, i2) and torch.equal(l1, l2) and torch.equal(f1, f2)
            assert x1 == x2
    for epoch in parallel:
        seen = torch.cat([indices for indices, *_ in epoch]).tolist()
        failed = [f for *_, batch_failed in epoch for f in batch_failed]
        assert sorted(seen) == [i for i in range(len(videos.items)) if i not in videos.broken]
        assert sorted(f.index for f in failed) == sorted(videos.broken)
        for indices, labels, frames, _ in epoch:
            assert frames.shape == (len(indices), T, 64, 64, 3) and frames.dtype == torch.uint8
            assert labels.tolist() == [videos.items[i].label for i in indices.tolist()]
    first = torch.cat([indices for indices, *_ in parallel[0]]).tolist()
    second = torch.cat([indices for indices, *_ in parallel[1]]).tolist()
    assert first != second  # reshuffled every epoch


class _FixedBatches:
    """An external batch sampler (as a distributed one would be): lists of indices per epoch."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        yield [self.epoch, 4]
        yield [7]


def test_loader_takes_an_external_batch_sampler_and_forwards_the_epoch(videos: Videos) -> None:
    dataset = ClipDataset(videos.items, videos.root, SPEC, frames=T, seed=4)
    sampler = _FixedBatches()
    loader = make_loader(dataset, batch_sampler=sampler, workers=2)
    loader.set_epoch(1)
    batches = list(loader)
    assert sampler.epoch == 1 and dataset.epoch == 1
    assert [b.indices.tolist() for b in batches] == [[1, 4], [7]]
    assert torch.equal(batches[0].frames[0], dataset[(1, 1)].frames)
    with pytest.raises(ValueError, match="exactly one"):
        make_loader(dataset, batch_size=2, batch_sampler=sampler)


def test_epoch_batches_shuffle_from_the_seed_and_keep_the_last_batch() -> None:
    batches = EpochBatches(10, 4, seed=1)
    first = list(batches)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10))
    assert list(EpochBatches(10, 4, seed=1)) == first
    batches.set_epoch(1)
    assert list(batches) != first
    assert list(EpochBatches(5, 2, shuffle=False)) == [[0, 1], [2, 3], [4]]
