"""Feed cached frame features to training: from memory, or streamed chunk by chunk.

Each epoch every video contributes one of its stored views, drawn at random (cheap
augmentation when a training store holds several clips or crops). Only videos whose status is
done are used.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mote.cache_schema.feature_store import FeatureStore

Batch = tuple[np.ndarray, np.ndarray]  # (B, T, D) float16 features, (B,) int64 labels


class InMemoryFeatures:
    """The store's done videos in RAM (K400 ViT-L/14, 8 frames, 1 view: about 3 GB).

    ``videos`` keeps only these store rows (few-shot subsets); ``epoch_size`` repeats them, in a
    fresh order each pass, until an epoch has that many samples (spec 8.3: the few-shot set is
    repeated to the size of the full training set).
    """

    def __init__(
        self,
        store: FeatureStore,
        videos: np.ndarray | None = None,
        epoch_size: int | None = None,
    ) -> None:
        self.indices, self.embeddings, labels = store.read_done()
        self.labels = labels.astype(np.int64)
        if videos is not None:
            keep = np.isin(self.indices, np.asarray(videos))
            self.indices, self.embeddings = self.indices[keep], self.embeddings[keep]
            self.labels = self.labels[keep]
        self.epoch_size = epoch_size

    def __len__(self) -> int:
        return self.epoch_size or len(self.labels)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        n, views = self.embeddings.shape[:2]
        passes = -(-len(self) // n) if n else 0
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])[: len(self)]
        view = rng.integers(views, size=len(order))
        for start in range(0, len(order), batch_size):  # the last partial batch is kept (spec 7)
            rows = order[start : start + batch_size]
            yield self.embeddings[rows, view[start : start + batch_size]], self.labels[rows]


class StreamingFeatures:
    """Chunks read in a random order, ``block_chunks`` at a time, shuffled within the block.

    For stores larger than memory: only one block of chunks is held at once.
    """

    def __init__(self, store: FeatureStore, block_chunks: int = 16) -> None:
        self.store = store
        self.block_chunks = max(1, block_chunks)
        self._done = store.done_mask()
        self._labels = np.asarray(store.labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._done.sum())

    def _block(self, chunks: np.ndarray, rng: np.random.Generator) -> Batch:
        parts, labels = [], []
        for chunk in chunks:
            start, stop = self.store.chunk_range(int(chunk))
            keep = np.flatnonzero(self._done[start:stop])
            if keep.size == 0:
                continue
            block = self.store.read_embeddings(slice(start, stop))[keep]
            view = rng.integers(block.shape[1], size=len(block))
            parts.append(block[np.arange(len(block)), view])
            labels.append(self._labels[start:stop][keep])
        if not parts:
            return np.empty((0,)), np.empty((0,), np.int64)
        features, labels_ = np.concatenate(parts), np.concatenate(labels)
        perm = rng.permutation(len(labels_))
        return features[perm], labels_[perm]

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        order = rng.permutation(self.store.n_chunks)
        carry: Batch | None = None
        for first in range(0, len(order), self.block_chunks):
            features, labels = self._block(order[first : first + self.block_chunks], rng)
            if len(labels) == 0:
                continue
            if carry is not None:
                features = np.concatenate([carry[0], features])
                labels = np.concatenate([carry[1], labels])
            full = len(labels) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield features[start : start + batch_size], labels[start : start + batch_size]
            carry = (features[full:], labels[full:]) if full < len(labels) else None
        if carry is not None and len(carry[1]):
            yield carry
