"""Encode the frames of many videos in fixed-size batches, on one device or several.

Every batch the CLIP tower sees has the same shape (the last one is zero-padded), so the
embedding of a frame does not depend on which other frames shared its batch, on the order in
which decode workers finished, or on which device encoded it. That is what makes an
interrupted-and-resumed extraction bit-identical to an uninterrupted one, and a store written on
two encoder processes identical to one written on one.

``BatchedEncoder`` only assembles batches; an ``EncoderBackend`` encodes them. ``LocalBackend``
encodes in this process, the next batch's copy overlapping the encoder (``staging``);
``encoder_pool.EncoderPool`` runs one process per device and returns batches as they finish,
possibly out of order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.staging import Finished, encode_queue


@dataclass
class Slot:
    """A batch buffer lent by a backend: fill ``images``, then ``submit`` it."""

    images: np.ndarray  # uint8 (B, S, S, 3), written in place
    encoder: int  # which of the backend's encoders will take it
    index: int  # the buffer's number at that encoder


@dataclass
class EncodedBatch:
    """The embeddings of one submitted batch, padding dropped."""

    batch_id: int
    encoder: int
    embeddings: np.ndarray  # float16 (n, D), n = the batch's real images
    seconds: float  # the encoder's time on it


@dataclass
class DeviceTally:
    """What one encoder did: videos it completed, real images it encoded, seconds it was busy."""

    device: str
    videos: int = 0
    images: int = 0
    busy_s: float = 0.0


class EncoderBackend(Protocol):
    """Where batches are encoded: ``devices`` has one entry per encoder (names may repeat)."""

    devices: list[str]
    batch_size: int
    image_shape: tuple[int, int, int]  # (S, S, 3)
    dim: int

    def free_slot(self) -> Slot | None:
        """A buffer to fill, or None while every buffer is in flight."""

    def submit(self, slot: Slot, batch_id: int, n: int) -> None:
        """Encode the filled ``slot``, whose first ``n`` images are real."""

    def collect(self, block: bool) -> list[EncodedBatch]:
        """Finished batches; with ``block``, wait until one finishes (if any is in flight)."""


class LocalBackend:
    """Encode with a CLIP in this process, reusing one batch buffer: its frames are staged
    (``clip.staging``) as ``submit`` starts them, and the batch is encoded while the next one
    is filled and copied; ``staging=False`` encodes each one as it is submitted."""

    def __init__(self, clip: ClipEncoder, batch_size: int, staging: bool = True) -> None:
        size = clip.preprocess.size
        self.clip = clip
        self.devices = [str(clip.device)]
        self.batch_size = batch_size
        self.image_shape = (size, size, 3)
        self.dim = clip.dim
        self._buffer = np.zeros((batch_size, *self.image_shape), np.uint8)
        self._queue = encode_queue(clip, (batch_size, *self.image_shape), staging)
        self._done: list[EncodedBatch] = []

    def free_slot(self) -> Slot:
        return Slot(self._buffer, 0, 0)  # free again as soon as submit returns

    def submit(self, slot: Slot, batch_id: int, n: int) -> None:
        if self._queue.full:
            self._keep([self._queue.finish()])
        self._queue.start(torch.from_numpy(slot.images), n, batch_id)
        self._keep(self._queue.ready())

    def collect(self, block: bool) -> list[EncodedBatch]:
        self._keep(self._queue.ready())
        if block and not self._done and self._queue.busy:
            self._keep([self._queue.finish()])
        done, self._done = self._done, []
        return done

    def _keep(self, finished: list[Finished]) -> None:
        self._done += [EncodedBatch(b.tag, 0, b.embeddings, b.seconds) for b in finished]


@dataclass
class _Pending:
    index: int
    images: np.ndarray  # uint8 (n, S, S, 3): all frames of all views of one video
    shape: tuple[int, int]  # (views, frames)
    out: np.ndarray  # float16 (n, D)
    sent: int = 0  # images handed to a batch so far
    filled: int = 0  # embeddings written so far


class BatchedEncoder:
    """Collect videos' frames and encode them ``batch_size`` images at a time.

    Give it a ``ClipEncoder`` and a batch size to encode here, or an ``EncoderBackend``.
    """

    def __init__(self, encoder: ClipEncoder | EncoderBackend, batch_size: int | None = None):
        if isinstance(encoder, ClipEncoder):
            if batch_size is None or batch_size < 1:
                raise ValueError(f"batch size must be positive, got {batch_size}")
            encoder = LocalBackend(encoder, batch_size)
        elif batch_size not in (None, encoder.batch_size):
            raise ValueError(f"the backend's batches hold {encoder.batch_size}, not {batch_size}")
        self.backend = encoder
        self.batch_size = encoder.batch_size
        self.tallies = [DeviceTally(device) for device in encoder.devices]
        self._queue: deque[_Pending] = deque()  # videos with images not yet in a batch
        self._batches: dict[int, list[tuple[_Pending, int, int]]] = {}  # in flight: the parts
        self._waiting = 0  # images queued but not yet in a batch
        self._next_batch = 0

    @property
    def images_encoded(self) -> int:
        return sum(tally.images for tally in self.tallies)

    def add(self, index: int, views: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Queue one video's uint8 views (V, T, S, S, 3); return videos whose embeddings are done.

        Each finished video comes back as ``(index, float16 (V, T, D))``.
        """
        v, t = views.shape[:2]
        if tuple(views.shape[2:]) != self.backend.image_shape:
            raise ValueError(
                f"video {index}: frames of shape {tuple(views.shape[2:])}, but the encoder takes "
                f"{self.backend.image_shape}"
            )
        images = views.reshape(v * t, *views.shape[2:])
        out = np.empty((v * t, self.backend.dim), np.float16)
        self._queue.append(_Pending(index, images, (v, t), out))
        self._waiting += len(images)
        done: list[tuple[int, np.ndarray]] = []
        while self._waiting >= self.batch_size:
            done += self._send_batch()
        return done + self._receive(block=False)

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Encode whatever is queued (padding the last batch), wait for every batch in flight,
        and return the finished videos."""
        done: list[tuple[int, np.ndarray]] = []
        while self._waiting > 0:
            done += self._send_batch()
        while self._batches:
            done += self._receive(block=True)
        return done

    def _send_batch(self) -> list[tuple[int, np.ndarray]]:
        """Fill a free buffer with the next ``batch_size`` images (zeros after the last video)
        and submit it; waiting for a buffer may finish videos, which are returned."""
        done: list[tuple[int, np.ndarray]] = []
        slot = self.backend.free_slot()
        while slot is None:
            done += self._receive(block=True)
            slot = self.backend.free_slot()
        parts: list[tuple[_Pending, int, int]] = []  # (video, start in video, count)
        taken = 0
        while taken < self.batch_size and self._queue:
            item = self._queue[0]
            count = min(self.batch_size - taken, len(item.images) - item.sent)
            slot.images[taken : taken + count] = item.images[item.sent : item.sent + count]
            parts.append((item, item.sent, count))
            item.sent += count
            taken += count
            if item.sent == len(item.images):
                self._queue.popleft()
        slot.images[taken:] = 0  # a reused buffer: the padding must be zeros, as in every batch
        self._waiting -= taken
        batch_id, self._next_batch = self._next_batch, self._next_batch + 1
        self._batches[batch_id] = parts
        self.backend.submit(slot, batch_id, taken)
        return done

    def _receive(self, block: bool) -> list[tuple[int, np.ndarray]]:
        done: list[tuple[int, np.ndarray]] = []
        for batch in self.backend.collect(block and bool(self._batches)):
            tally = self.tallies[batch.encoder]
            tally.images += len(batch.embeddings)
            tally.busy_s += batch.seconds
            offset = 0
            for item, start, count in self._batches.pop(batch.batch_id):
                item.out[start : start + count] = batch.embeddings[offset : offset + count]
                offset += count
                item.filled += count
                if item.filled == len(item.images):
                    tally.videos += 1
                    done.append((item.index, item.out.reshape(*item.shape, -1)))
        return done
