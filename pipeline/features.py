"""Feed cached frame features to training: from memory, or streamed chunk by chunk.

Each epoch every video contributes one of its stored views, drawn at random (cheap
augmentation when a training store holds several clips or crops). Only videos whose status is
done are used.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mote.cache_schema.store import FeatureStore
from mote.cache_schema.v1 import DONE

Batch = tuple[np.ndarray, np.ndarray]  # (B, T, D) float16 features, (B,) int64 labels


class InMemoryFeatures:
    """The whole store's done videos in RAM (K400 ViT-L/14, 8 frames, 1 view: about 3 GB)."""

    def __init__(self, store: FeatureStore) -> None:
        self.indices, self.embeddings, labels = store.read_done()
        self.labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        n, views = self.embeddings.shape[:2]
        order = rng.permutation(n)
        view = rng.integers(views, size=n)
        for start in range(0, n, batch_size):  # the last partial batch is kept (spec 7)
            rows = np.sort(order[start : start + batch_size])
            picked = self.embeddings[rows, view[rows]]
            perm = rng.permutation(len(rows))
            yield picked[perm], self.labels[rows][perm]


class StreamingFeatures:
    """Chunks read in a random order, ``block_chunks`` at a time, shuffled within the block.

    For stores larger than memory: only one block of chunks is held at once.
    """

    def __init__(self, store: FeatureStore, block_chunks: int = 16) -> None:
        self.store = store
        self.block_chunks = max(1, block_chunks)
        status = store.status()
        self._done = status == DONE
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
