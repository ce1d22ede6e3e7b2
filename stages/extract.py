"""Stage one, ``mote extract``: decode, sample, encode with CLIP, write a Zarr feature store.

Flow: resolve the dataset and the CLIP encoder, open the store (resume) or create it, then
stream the videos still to do through a pool of decode workers into fixed-size CLIP batches and
write each chunk of videos as soon as all of its videos are resolved (done or failed). The
store marks a video done only after its data is on disk, so an interrupted run resumes where
it stopped and ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from mote.cache_schema.claim import StoreClaim, StoreReadOnly
from mote.cache_schema.errors import StoreCorrupt
from mote.cache_schema.store import FeatureStore, StoreSpec, VideoResult
from mote.cache_schema.verify import verify
from mote.pipeline import __version__
from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.data.datasets import DatasetSpec, check_root, open_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.run_clip import TEST_BLEND, clip_for_run
from mote.pipeline.temporal.mote_model import MoTEConfig
from mote.pipeline.video.decode_pool import (
    DecodedVideo,
    DecodePool,
    DecodeTask,
    decode_one,
    default_workers,
    store_tasks,
)
from mote.pipeline.video.sampling import parse_views

DEFAULT_SPLIT = {"k400": "val", "k600": "split1", "ucf101": "test1", "hmdb51": "test1"}
DEFAULT_VIEWS = {"k600": "3x1", "ucf101": "3x1", "hmdb51": "3x1"}  # zero-shot protocol (spec 8.2)
# Frames per view: no more than MoTE's positional table has rows (spec 2.3), or none can be scored.
MAX_FRAMES = next(f.default for f in fields(MoTEConfig) if f.name == "context")


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
    repair: bool = False  # verify the store, redo the videos whose data are damaged
    dask: str | None = None
    run: Path | None = None  # encode with this run's CLIP (tuned visual weights, spec 7.4 blend)
    blend: bool = True  # --run: 0.99 tuned + 0.01 original (spec 7.4); off = the tuned weights
    kinetics_csv: Path | None = None  # K400: the official annotation CSV instead of a list

    @property
    def resolved_split(self) -> str:
        return self.split or DEFAULT_SPLIT.get(self.dataset, "custom")

    @property
    def resolved_views(self) -> str:
        return self.views or DEFAULT_VIEWS.get(self.dataset, "1x1")


def _check(cfg: ExtractConfig) -> None:
    if not 1 <= cfg.frames <= MAX_FRAMES:
        raise ConfigError(
            f"--frames {cfg.frames}: must be 1 to {MAX_FRAMES} (the temporal model's positional "
            f"table has {MAX_FRAMES} rows); the spec uses 8, 16 or 32"
        )
    if cfg.sampling not in ("eval", "train"):
        raise ConfigError(f"--sampling must be 'eval' or 'train', got '{cfg.sampling}'")
    if cfg.chunk_videos < 1:
        raise ConfigError(f"--chunk-videos must be >= 1, got {cfg.chunk_videos}")
    if cfg.decode_timeout <= 0:
        raise ConfigError(f"--decode-timeout must be positive, got {cfg.decode_timeout}")
    check_root(cfg.dataset, cfg.root)
    if cfg.decoder not in ("auto", "decord", "pyav"):
        raise ConfigError(f"--decoder must be auto, decord or pyav, got '{cfg.decoder}'")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.decode_workers is not None and cfg.decode_workers < 0:
        raise ConfigError(f"--decode-workers must be >= 0, got {cfg.decode_workers}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {cfg.limit}")
    if cfg.dask and cfg.dask.startswith("local:") and not cfg.dask[6:].isdigit():
        raise ConfigError(f"--dask {cfg.dask}: expected local:N with N workers")
    if cfg.repair and cfg.overwrite:
        raise ConfigError("--repair keeps the store and --overwrite replaces it: pass one of them")


def _dataset(cfg: ExtractConfig) -> tuple[DatasetSpec, Path]:
    """The split and its video root (--kinetics-csv reads the CSV's --split, default train)."""
    split = (cfg.split or "train") if cfg.kinetics_csv is not None else cfg.resolved_split
    return open_dataset(
        cfg.dataset, split, cfg.list_file, cfg.labels_file, cfg.kinetics_csv, cfg.root
    )


def _clip(cfg: ExtractConfig) -> ClipEncoder:
    """The encoder: a run's CLIP (``--run``) or ``--model`` with ``--pretrained``."""
    if cfg.run is None:
        return build_clip(cfg.model, cfg.pretrained, cfg.device, cfg.seed)
    return clip_for_run(cfg.run, cfg.device, _blend(cfg.blend))


def _blend(on: bool) -> float:
    """The factor of the run's tuned weights in the CLIP that encodes (spec 7.4)."""
    return TEST_BLEND if on else 1.0


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


def open_store(
    cfg: ExtractConfig, clip: ClipEncoder, dataset: DatasetSpec, claim: StoreClaim | None
) -> FeatureStore:
    """Reopen the store to resume (checking it matches), or create it with the text bank.

    Every write happens under ``claim``; without one (the folder is read-only) the store opens
    read-only, which is enough only when nothing is left to do.
    """
    spec = store_spec(cfg, clip, dataset)
    items = dataset.items[: cfg.limit] if cfg.limit else dataset.items
    video_ids = [item.video_id for item in items]
    labels = [item.label for item in items]

    def text() -> np.ndarray:
        return clip.class_text_embeddings(dataset.class_names)

    if claim is None:
        store = FeatureStore.resume(cfg.out, spec, video_ids, labels)
        left = len(store.todo(cfg.retry_failed))
        if cfg.overwrite or left or store.needs_consolidation():
            work = "--overwrite" if cfg.overwrite else f"{left} videos to extract"
            raise StoreReadOnly(
                f"{cfg.out}: read-only, but this run has work to do ({work}); make the folder "
                "writable, or choose another --out."
            )
        return store
    if cfg.overwrite:
        return FeatureStore.create(
            cfg.out,
            spec,
            video_ids,
            labels,
            text(),
            chunk_videos=cfg.chunk_videos,
            overwrite=True,
            claim=claim,
        )
    store = FeatureStore.open_or_create(
        cfg.out, spec, video_ids, labels, text, chunk_videos=cfg.chunk_videos, claim=claim
    )
    store.remove_partial_files(claim)  # a killed run may have left temporary chunk files
    return store


def repair(store: FeatureStore) -> dict:
    """Verify every chunk and mark the videos with damaged data pending, so this run redoes
    them; an unusable chunk is redone whole, so it is rewritten without being read."""
    report = verify(store)
    fixed_at_creation = report.unrepairable()
    if fixed_at_creation:
        raise StoreCorrupt(
            f"{fixed_at_creation[0].line()}; this array is written when the store is created, so "
            f"--repair cannot restore it: re-create the store with `mote extract ... --out "
            f"{store.path} --overwrite`."
        )
    videos = report.damaged_videos()
    if videos.size:
        store.mark_pending(videos)
    return {"problems": [p.line() for p in report.problems], "videos": len(videos)}


def claim_store(cfg: ExtractConfig, progress: Progress) -> StoreClaim | None:
    """Claim ``--out`` for this run; None for an existing read-only store (nothing to write).

    A second run on a claimed store is refused naming the owner; a claim whose process is gone
    is taken over with a notice.
    """
    try:
        claim = StoreClaim.acquire(cfg.out)
    except StoreReadOnly:
        if not (Path(cfg.out) / "zarr.json").is_file():
            raise
        return None
    if claim.taken_over is not None:
        progress.message(
            f"{cfg.out}: taking over the claim of a run that is gone "
            f"({claim.taken_over.describe()})"
        )
    return claim


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


def _failed(video: DecodedVideo) -> VideoResult:
    return VideoResult(video.index, None, None, video.num_frames, video.reason)


def _done(video: DecodedVideo, embeddings) -> VideoResult:
    if not np.isfinite(embeddings).all():  # fp16 overflow or a broken frame: not a valid video
        return VideoResult(
            video.index, None, None, video.num_frames, "the encoder returned non-finite embeddings"
        )
    return VideoResult(video.index, embeddings, video.frame_indices, video.num_frames)


@dataclass
class _Counts:
    done: int = 0
    failed: int = 0
    images: int = 0


def _extract_local(
    store: FeatureStore,
    clip: ClipEncoder,
    tasks: list[DecodeTask],
    pool: DecodePool,
    batch_size: int,
    progress: Progress,
) -> _Counts:
    """Decode in a process pool, encode here in fixed-size batches, write whole chunks."""
    counts = _Counts()
    writer = ChunkWriter(store, [task.index for task in tasks])
    encoder = BatchedEncoder(clip, batch_size)
    decoded: dict[int, DecodedVideo] = {}  # videos waiting for their embeddings

    def write_encoded(encoded: list) -> None:
        for index, embeddings in encoded:
            result = _done(decoded.pop(index), embeddings)
            writer.add(result)
            if result.reason:
                counts.failed += 1
                progress.update(failed=1)
                continue
            counts.done += 1
            progress.update(done=1, frames=embeddings.shape[0] * embeddings.shape[1])

    def take(videos) -> None:
        for video in videos:
            if not video.ok:
                writer.add(_failed(video))
                counts.failed += 1
                progress.update(failed=1)
                continue
            decoded[video.index] = video
            write_encoded(encoder.add(video.index, video.views))

    for task in tasks:
        pool.submit(task)
        while pool.inflight >= pool.capacity:  # keep every worker busy, never more
            take(pool.results(timeout_s=1.0))
    while pool.inflight:
        take(pool.results(timeout_s=1.0))
    write_encoded(encoder.flush())
    counts.images = encoder.images_encoded
    return counts


# --------------------------------------------------------------------- dask.distributed

_WORKER_CLIPS: dict[tuple, ClipEncoder] = {}  # one CLIP per dask worker process, built once


def _worker_clip(
    model: str, pretrained: str, device: str, seed: int, run: str | None = None, blend: bool = True
) -> ClipEncoder:
    key = (model, pretrained, device, seed, run, blend)
    if key not in _WORKER_CLIPS:
        if run is None:
            clip = build_clip(model, pretrained, device, seed)
        else:
            clip = clip_for_run(Path(run), device, _blend(blend))
        if clip.device.type == "cpu":
            torch.set_num_threads(1)  # one core per dask worker thread
        _WORKER_CLIPS[key] = clip
    return _WORKER_CLIPS[key]


def _decode_with_timeout(task: DecodeTask, timeout_s: float) -> DecodedVideo:
    """decode_one in a helper thread; a decode that outlives the timeout is abandoned.

    dask worker processes may not start children, so the pool's kill-on-timeout is not
    available here; a stuck decoder thread is left behind and the video recorded as failed.
    """
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(decode_one, task)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        return DecodedVideo(task.index, None, None, 0, f"decode timed out after {timeout_s:g} s")
    finally:
        executor.shutdown(wait=False)


def extract_chunk(
    store: FeatureStore,
    chunk: int,
    tasks: list[DecodeTask],
    clip_args: tuple[str, str, str, int, str | None, bool],
    batch_size: int,
    timeout_s: float,
) -> dict[str, int]:
    """A dask task: decode, encode and write one whole chunk (its only writer)."""
    clip = _worker_clip(*clip_args)
    encoder = BatchedEncoder(clip, batch_size)
    results: list[VideoResult] = []
    decoded: dict[int, DecodedVideo] = {}
    for task in tasks:
        video = _decode_with_timeout(task, timeout_s)
        if not video.ok:
            results.append(_failed(video))
            continue
        decoded[video.index] = video
        results += [_done(decoded.pop(i), emb) for i, emb in encoder.add(video.index, video.views)]
    results += [_done(decoded.pop(i), emb) for i, emb in encoder.flush()]
    store.write_chunk(chunk, results)
    done = sum(not r.reason for r in results)
    return {"done": done, "failed": len(results) - done, "images": encoder.images_encoded}


def _dask_client(address: str):
    """``local`` / ``local:N`` starts a LocalCluster of N one-thread workers; else connect."""
    from dask.distributed import Client, LocalCluster

    if address == "local" or address.startswith("local:"):
        n = int(address.split(":", 1)[1]) if ":" in address else default_workers()
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.ERROR
        )
        return Client(cluster), cluster
    return Client(address), None


def _extract_distributed(
    cfg: ExtractConfig,
    store: FeatureStore,
    tasks: list[DecodeTask],
    batch_size: int,
    progress: Progress,
) -> _Counts:
    """One dask task per chunk of videos; workers write their chunks straight to the store."""
    from dask.distributed import as_completed

    by_chunk: dict[int, list[DecodeTask]] = {}
    for task in tasks:
        by_chunk.setdefault(store.chunk_of(task.index), []).append(task)
    run_path = cfg.run and str(cfg.run)
    clip_args = (cfg.model, cfg.pretrained, cfg.device, cfg.seed, run_path, cfg.blend)
    counts = _Counts()
    client, cluster = _dask_client(cfg.dask)
    try:
        futures = [
            client.submit(
                extract_chunk,
                store,
                chunk,
                chunk_tasks,
                clip_args,
                batch_size,
                cfg.decode_timeout,
                pure=False,
            )
            for chunk, chunk_tasks in by_chunk.items()
        ]
        for future in as_completed(futures):
            result = future.result()
            counts.done += result["done"]
            counts.failed += result["failed"]
            counts.images += result["images"]
            progress.update(done=result["done"], failed=result["failed"], frames=result["images"])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return counts


def run(cfg: ExtractConfig, progress: Progress | None = None) -> dict:
    """Extract every video of the dataset split that the store does not hold yet."""
    progress = progress or NullProgress()
    _check(cfg)
    dataset, root = _dataset(cfg)
    workers = default_workers() if cfg.decode_workers is None else cfg.decode_workers
    # Start the decode workers first: they boot while the CLIP weights load.
    with DecodePool(0 if cfg.dask else workers, cfg.decode_timeout) as pool:
        # Claimed before the model loads: a second writer is refused at once. Released however
        # the run ends (errors, Ctrl-C); the dask driver holds it for its workers.
        claim = claim_store(cfg, progress)
        try:
            clip = _clip(cfg)
            store = open_store(cfg, clip, dataset, claim)
            if store.restored_metadata:
                names = ", ".join(f"{name}/zarr.json" for name in store.restored_metadata)
                progress.message(f"{cfg.out}: restored {names} from the consolidated metadata")
            repaired = repair(store) if cfg.repair else None
            todo = store.todo(cfg.retry_failed)
            tasks = store_tasks(store.spec, store.video_ids, todo, root, cfg.decoder)
            batch_size = cfg.batch_size or (256 if clip.device.type == "cuda" else 32)
            started = time.perf_counter()
            if not tasks and not store.needs_consolidation():
                progress.message(f"{cfg.out}: nothing to do: every video is done or failed")
                counts = _Counts()
            else:
                progress.start(len(tasks), f"extract {dataset.name}/{dataset.split}")
                try:
                    if cfg.dask:
                        counts = _extract_distributed(cfg, store, tasks, batch_size, progress)
                    else:
                        counts = _extract_local(store, clip, tasks, pool, batch_size, progress)
                finally:
                    progress.finish()
                store.consolidate()
        finally:
            if claim is not None:
                claim.release()
    seconds = time.perf_counter() - started
    summary = store.summary()
    summary.update(
        store=str(cfg.out),
        attempted=len(tasks),
        newly_done=counts.done,
        newly_failed=counts.failed,
        seconds=round(seconds, 3),
        videos_per_s=round(len(tasks) / seconds, 3) if seconds > 0 else 0.0,
        frames_per_s=round(counts.images / seconds, 1) if seconds > 0 else 0.0,
        decode_workers=workers,
        batch_size=batch_size,
        device=str(clip.device),
        dask=cfg.dask,
    )
    if repaired is not None:
        summary["repaired"] = repaired
    return summary
