"""Extraction on dask.distributed: one task per chunk of videos, each worker decoding, encoding
and writing its chunks straight to the store (the only writer of each chunk).

Workers need no disk in common with the driver when the store is at an s3:// URL (and the
videos under one): each opens the store itself, once per run, and writes its chunks to the
object store; the driver holds the claim and consolidates at the end. Before each write a
worker checks that its driver still holds the claim (``check_token``), so the chunks of a driver
that was killed and replaced are not written in its name. A store at a local path needs that
path on every worker (a shared file system); a worker without it says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.remote_claim import check_token
from mote.cache_schema.spec import VideoResult
from mote.cache_schema.store_errors import StoreNotFound
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.errors import ConfigError
from mote.pipeline.extraction.cluster import dask_client
from mote.pipeline.extraction.results import ExtractCounts, done_result, failed_result
from mote.pipeline.locations import Url, locate
from mote.pipeline.progress import Progress
from mote.pipeline.runs.run_clip import ClipRecipe
from mote.pipeline.threads import use_worker_threads
from mote.pipeline.video.decode_pool import DecodedVideo, DecodeTask, decode_one

_WORKER_CLIPS: dict[tuple[ClipRecipe, str], ClipEncoder] = {}  # per worker process, built once
_WORKER_STORES: dict[str, FeatureStore] = {}  # per worker process: its run's store, opened once


@dataclass(frozen=True)
class StoreTarget:
    """The store a run's workers write, as they reopen it: where it is, how to reach it, and
    the driver's holding of its claim (``token``: S3 stores; None for a folder's claim).
    ``run`` tells one run from the next, so a worker never writes through a store it opened
    for an earlier run (which ``--overwrite`` may have replaced)."""

    path: str
    options: dict[str, Any] | None
    token: str | None
    run: str

    @classmethod
    def of(cls, store: FeatureStore, token: str | None) -> StoreTarget:
        """``store``'s target, a folder by its absolute path (workers start elsewhere)."""
        path = store.path if isinstance(store.path, Url) else Path(store.path).absolute()
        return cls(str(path), store.storage_options, token, uuid.uuid4().hex)

    def open(self, worker: str) -> FeatureStore:
        """The store, writable, opened once per worker and run."""
        store = _WORKER_STORES.get(self.run)
        if store is not None:
            return store
        try:
            store = FeatureStore.open(self.path, writable=True, storage_options=self.options)
        except StoreNotFound as err:
            if isinstance(locate(self.path), Url):
                raise
            raise ConfigError(
                f"{self.path}: not on dask worker {worker}; workers write a local store "
                "at its own path, so they need it on a shared file system: without one, "
                "write the store to object storage (--out s3://bucket/store.zarr)"
            ) from err
        _WORKER_STORES.clear()  # keep the newest run's store only; older runs have ended
        _WORKER_STORES[self.run] = store
        return store

    def check_claim(self) -> None:
        """Fail unless the driver still holds the claim (S3 stores; a folder's needs none)."""
        if self.token is not None:
            check_token(self.path, self.token, self.options)


def _worker_clip(recipe: ClipRecipe, device: str) -> ClipEncoder:
    key = (recipe, device)
    if key not in _WORKER_CLIPS:
        clip = recipe.build(device)
        if clip.device.type == "cpu":
            use_worker_threads()  # one core per dask worker thread
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
    target: StoreTarget,
    chunk: int,
    tasks: list[DecodeTask],
    recipe: ClipRecipe,
    device: str,
    batch_size: int,
    timeout_s: float,
) -> dict:
    """A dask task: decode, encode and write one whole chunk; report what this worker did."""
    from dask.distributed import get_worker

    worker = get_worker().address
    store = target.open(worker)
    clip = _worker_clip(recipe, device)
    encoder = BatchedEncoder(clip, batch_size)
    results: list[VideoResult] = []
    decoded: dict[int, DecodedVideo] = {}
    for task in tasks:
        video = _decode_with_timeout(task, timeout_s)
        if not video.ok:
            results.append(failed_result(video))
            continue
        decoded[video.index] = video
        encoded = encoder.add(video.index, video.views)
        results += [done_result(decoded.pop(i), emb) for i, emb in encoded]
    results += [done_result(decoded.pop(i), emb) for i, emb in encoder.flush()]
    target.check_claim()
    store.write_chunk(chunk, results)
    done = sum(not r.reason for r in results)
    (tally,) = encoder.tallies
    return {
        "done": done,
        "failed": len(results) - done,
        "videos": tally.videos,
        "images": tally.images,
        "busy_s": tally.busy_s,
        "worker": worker,
        "device": str(clip.device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def worker_device(address: str, spec: str, devices: Sequence[torch.device]) -> str:
    """The device a worker encodes on: in a local cluster its pinned GPU (``cuda``) or the CPU
    when ``devices`` has no GPU; a remote worker the GPU it was started with (``auto``), or the
    CPU when ``--devices`` (``spec``) names only CPUs."""
    if address.startswith("local"):
        return "cuda" if devices[0].type == "cuda" else "cpu"
    cpu_only = all(part.strip().lower() == "cpu" for part in spec.split(","))
    return "cpu" if cpu_only else "auto"


def _count(counts: ExtractCounts, workers: dict[str, dict], result: dict) -> None:
    """Add one chunk's result to the totals and to its worker's row."""
    counts.done += result["done"]
    counts.failed += result["failed"]
    counts.images += result["images"]
    row = workers.setdefault(
        result["worker"],
        {"device": result["device"], "videos": 0, "images": 0, "busy_s": 0.0},
    )
    row.update(
        videos=row["videos"] + result["videos"],
        images=row["images"] + result["images"],
        busy_s=row["busy_s"] + result["busy_s"],
        worker=result["worker"],
        cuda_visible_devices=result["cuda_visible_devices"],
    )


def extract_distributed(
    address: str,
    store: FeatureStore,
    tasks: list[DecodeTask],
    recipe: ClipRecipe,
    spec: str,
    devices: Sequence[torch.device],
    batch_size: int,
    timeout_s: float,
    progress: Progress,
    default_workers: int = 1,
    token: str | None = None,
) -> ExtractCounts:
    """One dask task per chunk of videos; workers write their chunks straight to the store.

    ``spec`` is ``--devices`` as given and ``devices`` what it resolved to here: a local cluster
    pins its workers to these GPUs, round robin. ``token`` names the driver's holding of an S3
    store's claim, which workers check before each write.
    """
    from dask.distributed import as_completed

    by_chunk: dict[int, list[DecodeTask]] = {}
    for task in tasks:
        by_chunk.setdefault(store.chunk_of(task.index), []).append(task)
    device = worker_device(address, spec, devices)
    gpus = [d.index for d in devices if d.type == "cuda"]
    counts = ExtractCounts()
    target = StoreTarget.of(store, token)
    workers: dict[str, dict] = {}
    client, cluster = dask_client(address, gpus, default_workers)
    try:
        futures = [
            client.submit(
                extract_chunk,
                target,
                chunk,
                chunk_tasks,
                recipe,
                device,
                batch_size,
                timeout_s,
                pure=False,
            )
            for chunk, chunk_tasks in by_chunk.items()
        ]
        for future in as_completed(futures):
            result = future.result()
            _count(counts, workers, result)
            progress.update(done=result["done"], failed=result["failed"], frames=result["images"])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    counts.devices = sorted(workers.values(), key=lambda row: row["worker"])
    return counts
