"""Encode the frames of many videos in fixed-size batches.

Every batch the CLIP tower sees has the same shape (the last one is zero-padded), so the
embedding of a frame does not depend on which other frames shared its batch or on the order
in which decode workers finished. That is what makes an interrupted-and-resumed extraction
bit-identical to an uninterrupted one, on the CPU and on the GPU.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from mote.pipeline.clip.encoder import ClipEncoder


@dataclass
class _Pending:
    index: int
    images: np.ndarray  # uint8 (n, S, S, 3): all frames of all views of one video
    shape: tuple[int, int]  # (views, frames)
    out: np.ndarray  # float16 (n, D)
    sent: int = 0  # images handed to a batch so far
    filled: int = 0  # embeddings written so far


class BatchedEncoder:
    """Collect videos' frames and encode them ``batch_size`` images at a time."""

    def __init__(self, clip: ClipEncoder, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.clip = clip
        self.batch_size = batch_size
        self._queue: deque[_Pending] = deque()  # videos with images not yet in a batch
        self._open: dict[int, _Pending] = {}  # videos with embeddings not yet complete
        self._waiting = 0  # images queued but not yet encoded
        self.images_encoded = 0

    def add(self, index: int, views: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Queue one video's uint8 views (V, T, S, S, 3); return videos whose embeddings are done.

        Each finished video comes back as ``(index, float16 (V, T, D))``.
        """
        v, t = views.shape[:2]
        images = views.reshape(v * t, *views.shape[2:])
        item = _Pending(index, images, (v, t), np.empty((v * t, self.clip.dim), np.float16))
        self._queue.append(item)
        self._open[index] = item
        self._waiting += len(images)
        done: list[tuple[int, np.ndarray]] = []
        while self._waiting >= self.batch_size:
            done += self._encode_batch()
        return done

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Encode whatever is queued (padding the last batch) and return the finished videos."""
        done: list[tuple[int, np.ndarray]] = []
        while self._waiting > 0:
            done += self._encode_batch()
        return done

    def _encode_batch(self) -> list[tuple[int, np.ndarray]]:
        size = self.batch_size
        first = self._queue[0]
        batch = np.zeros((size, *first.images.shape[1:]), np.uint8)
        parts: list[tuple[_Pending, int, int]] = []  # (video, start in video, count)
        taken = 0
        while taken < size and self._queue:
            item = self._queue[0]
            count = min(size - taken, len(item.images) - item.sent)
            batch[taken : taken + count] = item.images[item.sent : item.sent + count]
            parts.append((item, item.sent, count))
            item.sent += count
            taken += count
            if item.sent == len(item.images):
                self._queue.popleft()
        self._waiting -= taken
        embeddings = self.clip.encode_frames(torch.from_numpy(batch))
        embeddings = embeddings[:taken].to(torch.float16).cpu().numpy()
        self.images_encoded += taken
        done: list[tuple[int, np.ndarray]] = []
        offset = 0
        for item, start, count in parts:
            item.out[start : start + count] = embeddings[offset : offset + count]
            offset += count
            item.filled += count
            if item.filled == len(item.images):
                del self._open[item.index]
                done.append((item.index, item.out.reshape(*item.shape, -1)))
        return done
