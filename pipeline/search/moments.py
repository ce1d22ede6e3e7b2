"""Where in the video: the sampled frame whose stored CLIP feature best matches a query.

The store keeps every video's per-frame CLIP features and which frames they are; a query in
CLIP space (a text through the text tower, an image's own feature) is compared with each
frame of each hit, and the best one is the hit's moment: its frame index in the file and its
time in seconds. Queries with no CLIP-space vector (a video, a row, a raw embedding) and hits
whose store is gone carry none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.video.timing import frame_seconds


def best_frames(store: FeatureStore, store_rows: list[int], query: np.ndarray) -> list[int]:
    """For each store row, the index (in its video file) of the sampled frame whose feature
    has the highest cosine with the unit vector ``query``."""
    if not store_rows:
        return []
    order = np.unique(store_rows)
    features = np.asarray(store.read_embeddings(order), np.float32)  # (k, V, T, D)
    frames = np.asarray(store.read_frame_indices(order)).reshape(len(order), -1)
    flat = features.reshape(len(order), -1, features.shape[-1])
    norms = np.linalg.norm(flat, axis=-1).clip(min=1e-12)
    best = ((flat @ query.astype(np.float32)) / norms).argmax(axis=1)
    chosen = dict(zip(order.tolist(), frames[np.arange(len(order)), best].tolist(), strict=True))
    return [int(chosen[row]) for row in store_rows]


def add_moments(
    hits: list[dict], query: np.ndarray | None, store: FeatureStore | None, store_rows: list[int]
) -> list[dict]:
    """``hits`` with ``frame`` and ``time_s`` set: the best frame for ``query`` (None and None
    without a CLIP-space query or a store)."""
    frames: list[Any] = [None] * len(hits)
    if query is not None and store is not None:
        frames = best_frames(store, store_rows, query)
    for hit, frame in zip(hits, frames, strict=True):
        hit["frame"] = frame
        hit["time_s"] = None if frame is None else frame_seconds(hit["path"], frame)
    return hits
