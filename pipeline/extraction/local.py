"""Extraction on this machine: the decode pool feeds a ``BatchedEncoder`` (one device here, or
one encoder process per device), and each chunk of videos is written, behind the encoder, once
all are resolved."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict

import numpy as np

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.spec import VideoResult
from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.extraction.results import ExtractCounts, done_result, failed_result
from mote.pipeline.progress import Progress
from mote.pipeline.video.decode_pool import DecodedVideo, DecodePool, DecodeTask


class ChunkWriter:
    """Holds finished videos until every video of their chunk is resolved, then writes the chunk
    on a thread of its own, so that the encoder never waits for the store: on object storage a
    chunk's write is several round trips (docs/performance.md, "Object storage").

    One write runs at a time, in the order chunks complete, so no two writes meet in a chunk or
    a shard; at most ``behind`` chunks wait, which bounds the memory they hold. A write that
    fails is raised by the next ``add`` or by ``close``. Use it as a context manager: leaving
    the block normally waits for every write; leaving it by an error drops the writes not yet
    started (their videos stay pending and a rerun extracts them) and waits for the one running.
    """

    def __init__(self, store: FeatureStore, todo: list[int], behind: int = 2) -> None:
        self.store = store
        self._left: dict[int, int] = {}
        for video in todo:
            chunk = store.chunk_of(video)
            self._left[chunk] = self._left.get(chunk, 0) + 1
        self._results: dict[int, list[VideoResult]] = {chunk: [] for chunk in self._left}
        self._behind = behind
        self._writes: deque[Future] = deque()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mote-chunk-writer")

    def add(self, result: VideoResult) -> None:
        chunk = self.store.chunk_of(result.index)
        self._results[chunk].append(result)
        self._left[chunk] -= 1
        if self._left[chunk] == 0:
            del self._left[chunk]
            self._settle(keep=self._behind - 1)
            self._writes.append(
                self._thread.submit(self.store.write_chunk, chunk, self._results.pop(chunk))
            )

    def _settle(self, keep: int) -> None:
        """Raise a failed write, then wait until at most ``keep`` writes are left."""
        while self._writes and (self._writes[0].done() or len(self._writes) > keep):
            self._writes.popleft().result()

    def close(self) -> None:
        """Wait for every write; raise the first that failed."""
        try:
            self._settle(keep=0)
        finally:
            self._thread.shutdown(wait=True)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._thread.shutdown(wait=True, cancel_futures=True)


def extract_local(
    store: FeatureStore,
    tasks: list[DecodeTask],
    pool: DecodePool,
    encoder: BatchedEncoder,
    progress: Progress,
) -> ExtractCounts:
    """Decode in the pool, encode in fixed-size batches as videos arrive, write whole chunks."""
    counts = ExtractCounts()
    writer = ChunkWriter(store, [task.index for task in tasks])
    decoded: dict[int, DecodedVideo] = {}  # videos waiting for their embeddings

    def write_encoded(encoded: list[tuple[int, np.ndarray]]) -> None:
        for index, embeddings in encoded:
            result = done_result(decoded.pop(index), embeddings)
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
                writer.add(failed_result(video))
                counts.failed += 1
                progress.update(failed=1)
                continue
            decoded[video.index] = video
            write_encoded(encoder.add(video.index, video.views))

    with writer:
        for task in tasks:
            pool.submit(task)
            while pool.inflight >= pool.capacity:  # keep every worker busy, never more
                take(pool.results(timeout_s=1.0))
        while pool.inflight:
            take(pool.results(timeout_s=1.0))
        write_encoded(encoder.flush())
    counts.images = encoder.images_encoded
    counts.devices = [asdict(tally) for tally in encoder.tallies]
    return counts
