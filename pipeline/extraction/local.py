"""Extraction on this machine: the decode pool feeds a ``BatchedEncoder`` (one device here, or
one encoder process per device), and each chunk of videos is written once all are resolved."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from mote.cache_schema.spec import VideoResult
from mote.cache_schema.store import FeatureStore
from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.extraction.results import ExtractCounts, done_result, failed_result
from mote.pipeline.progress import Progress
from mote.pipeline.video.decode_pool import DecodedVideo, DecodePool, DecodeTask


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
