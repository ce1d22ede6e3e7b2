"""Stage one, ``mote extract``: decode, sample, encode with CLIP, write a Zarr feature store.

Flow: resolve the dataset and the CLIP encoder, open the store (resume) or create it, then
stream the videos still to do through a pool of decode workers into fixed-size CLIP batches and
write each chunk of videos as soon as all of its videos are resolved (done or failed). The
store marks a video done only after its data is on disk, so an interrupted run resumes where
it stopped and ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mote.cache_schema.store import FeatureStore, StoreSpec, VideoResult
from mote.pipeline import __version__
from mote.pipeline.clip_model import ClipEncoder, build_clip
from mote.pipeline.datasets import DatasetSpec, load_dataset
from mote.pipeline.decode_pool import DecodedVideo, DecodePool, DecodeTask, default_workers
from mote.pipeline.encoding import BatchedEncoder
from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import NullProgress, Progress

DEFAULT_SPLIT = {"k400": "val", "k600": "split1", "ucf101": "test1", "hmdb51": "test1"}
DEFAULT_VIEWS = {"k600": "3x1", "ucf101": "3x1", "hmdb51": "3x1"}  # zero-shot protocol (spec 8.2)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything ``mote extract`` needs; CLI flags and ``--config`` keys use these names."""

    dataset: str
    out: Path
    root: Path | None = None
    split: str | None = None
    list_file: Path | None = None
    labels_file: Path | None = None
    model: str = "ViT-B-16"
    pretrained: str = "openai"
    frames: int = 8
    views: str | None = None
    sampling: str = "eval"
    seed: int = 0
    device: str = "auto"
    batch_size: int | None = None
    decode_workers: int | None = None
    decoder: str = "auto"
    decode_timeout: float = 120.0
    chunk_videos: int = 32
    limit: int | None = None
    overwrite: bool = False
    retry_failed: bool = False

    @property
    def resolved_split(self) -> str:
        return self.split or DEFAULT_SPLIT.get(self.dataset, "custom")

    @property
    def resolved_views(self) -> str:
        return self.views or DEFAULT_VIEWS.get(self.dataset, "1x1")


def parse_views(views: str) -> tuple[int, int]:
    """'4x3' -> (4 clips, 3 crops); crops must be 1 or 3 (spec section 7.3)."""
    try:
        clips, crops = (int(part) for part in views.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"--views '{views}': expected CLIPSxCROPS such as 1x1, 3x1 or 4x3"
        ) from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views '{views}': clips must be >= 1 and crops 1 or 3")
    return clips, crops


def _check(cfg: ExtractConfig) -> None:
    if cfg.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {cfg.frames}")
    if cfg.sampling not in ("eval", "train"):
        raise ConfigError(f"--sampling must be 'eval' or 'train', got '{cfg.sampling}'")
    if cfg.chunk_videos < 1:
        raise ConfigError(f"--chunk-videos must be >= 1, got {cfg.chunk_videos}")
    if cfg.decode_timeout <= 0:
        raise ConfigError(f"--decode-timeout must be positive, got {cfg.decode_timeout}")
    if cfg.dataset != "list" and cfg.root is None:
        raise ConfigError(f"--root is required: the folder that holds the {cfg.dataset} videos")


def _video_root(cfg: ExtractConfig, dataset: DatasetSpec) -> Path:
    if cfg.root is not None:
        return cfg.root
    return Path(dataset.list_file).parent  # `list` datasets default to the list file's folder


def store_spec(cfg: ExtractConfig, clip: ClipEncoder, dataset: DatasetSpec) -> StoreSpec:
    """What the store records about how its features were made."""
    clips, crops = parse_views(cfg.resolved_views)
    p = clip.preprocess
    return StoreSpec(
        model=clip.model_name,
        pretrained=clip.pretrained,
        weights_id=clip.weights_id,
        dim=clip.dim,
        frames=cfg.frames,
        clips=clips,
        crops=crops,
        sampling=cfg.sampling,
        sampling_seed=cfg.seed,
        preprocess={
            "size": p.size,
            "mean": list(p.mean),
            "std": list(p.std),
            "interpolation": p.interpolation,
        },
        dataset=dataset.name,
        split=dataset.split,
        class_names=tuple(dataset.class_names),
        tool_version=__version__,
    )


def open_store(cfg: ExtractConfig, clip: ClipEncoder, dataset: DatasetSpec) -> FeatureStore:
    """Reopen the store to resume (checking it matches), or create it with the text bank."""
    spec = store_spec(cfg, clip, dataset)
    items = dataset.items[: cfg.limit] if cfg.limit else dataset.items
    video_ids = [item.video_id for item in items]
    labels = [item.label for item in items]

    def text() -> np.ndarray:
        return clip.class_text_embeddings(dataset.class_names)

    if cfg.overwrite:
        return FeatureStore.create(
            cfg.out, spec, video_ids, labels, text(), chunk_videos=cfg.chunk_videos, overwrite=True
        )
    store = FeatureStore.open_or_create(
        cfg.out, spec, video_ids, labels, text, chunk_videos=cfg.chunk_videos
    )
    store.remove_partial_files()  # a killed run may have left temporary chunk files
    return store


class ChunkWriter:
    """Holds finished videos until every video of their chunk is resolved, then writes it."""

    def __init__(self, store: FeatureStore, todo: list[int]) -> None:
        self.store = store
        self._left: dict[int, int] = {}
        for video in todo:
            chunk = store.chunk_of(video)
            self._left[chunk] = self._left.get(chunk, 0) + 1
        self._results: dict[int, list[VideoResult]] = {chunk: [] for chunk in self._left}

    def add(self, result: VideoResult) -> None:
        chunk = self.store.chunk_of(result.index)
        self._results[chunk].append(result)
        self._left[chunk] -= 1
        if self._left[chunk] == 0:
            self.store.write_chunk(chunk, self._results.pop(chunk))
            del self._left[chunk]

    @property
    def open_chunks(self) -> int:
        return len(self._left)


def _failed(video: DecodedVideo) -> VideoResult:
    return VideoResult(video.index, None, None, video.num_frames, video.reason)


def run(cfg: ExtractConfig, progress: Progress | None = None) -> dict:
    """Extract every video of the dataset split that the store does not hold yet."""
    progress = progress or NullProgress()
    _check(cfg)
    clips, crops = parse_views(cfg.resolved_views)
    dataset = load_dataset(cfg.dataset, cfg.resolved_split, cfg.list_file, cfg.labels_file)
    root = _video_root(cfg, dataset)
    clip = build_clip(cfg.model, cfg.pretrained, cfg.device, cfg.seed)
    store = open_store(cfg, clip, dataset)
    todo = [int(v) for v in store.todo(retry_failed=cfg.retry_failed)]
    batch_size = cfg.batch_size or (256 if clip.device.type == "cuda" else 32)
    workers = default_workers() if cfg.decode_workers is None else cfg.decode_workers

    started = time.perf_counter()
    done = failed = 0
    progress.start(len(todo), f"extract {dataset.name}/{dataset.split}")
    writer = ChunkWriter(store, todo)
    encoder = BatchedEncoder(clip, batch_size)
    frame_indices: dict[int, DecodedVideo] = {}  # decoded videos whose embeddings are pending
    tasks = (
        DecodeTask(
            index=v,
            path=str(root / store.video_ids[v]),
            frames=cfg.frames,
            clips=clips,
            crops=crops,
            size=clip.preprocess.size,
            mode=cfg.sampling,
            seed=cfg.seed,
            backend=cfg.decoder,
        )
        for v in todo
    )
    remaining = len(todo)

    def finish(encoded: list) -> None:
        nonlocal done
        for index, embeddings in encoded:
            video = frame_indices.pop(index)
            writer.add(VideoResult(index, embeddings, video.frame_indices, video.num_frames))
            done += 1
            progress.update(done=1, frames=embeddings.shape[0] * embeddings.shape[1])

    with DecodePool(workers, cfg.decode_timeout) as pool:
        for task in tasks:  # keep the pool full; collect results whenever it is
            pool.submit(task)
            while pool.inflight >= pool.capacity:
                remaining -= _collect(pool, writer, encoder, frame_indices, finish, progress)
        while pool.inflight:
            remaining -= _collect(pool, writer, encoder, frame_indices, finish, progress)
        finish(encoder.flush())
    failed = len(todo) - done
    progress.finish()
    store.consolidate()
    seconds = time.perf_counter() - started
    summary = store.summary()
    summary.update(
        store=str(cfg.out),
        attempted=len(todo),
        newly_done=done,
        newly_failed=failed,
        seconds=round(seconds, 3),
        videos_per_s=round(len(todo) / seconds, 3) if seconds > 0 else 0.0,
        frames_per_s=round(encoder.images_encoded / seconds, 1) if seconds > 0 else 0.0,
        decode_workers=workers,
        batch_size=batch_size,
        device=str(clip.device),
    )
    return summary


def _collect(pool, writer, encoder, pending, finish, progress) -> int:
    """Take whatever the pool has finished: failures go straight to the writer."""
    count = 0
    for video in pool.results(timeout_s=1.0):
        count += 1
        if not video.ok:
            writer.add(_failed(video))
            progress.update(failed=1)
            continue
        pending[video.index] = video
        finish(encoder.add(video.index, video.views))
    return count
