"""Encode batches with the host-to-device copy of the next one overlapping the encoder.

A batch of uint8 frames (B, 224, 224, 3: 38.5 MB at B = 256) copied straight from shared memory
is a synchronous, pageable copy in series with the model. ``StagedEncoding`` copies it into one
of two pinned staging buffers (allocated once, reused), starts the host-to-device copy on a side
CUDA stream (``non_blocking``), and queues the encoder on the compute stream behind the copy's
event, so batch k+1 crosses the bus while batch k is encoded. The embeddings come back the same
way: a non-blocking copy into a pinned output buffer, then an event the host waits on.

A staging buffer is reused only after the host has waited for its batch's last event (copy,
encoder and copy back all done), so no copy in flight is ever overwritten: two buffers are
double buffering, two batches in flight at most.

On the CPU the same code runs with ``NullEvents``: no stream, every event already complete, the
"device" buffer is the staging buffer itself; ``PlainEncoding`` is the path without staging
(``--staging off`` in ``bench/extract.py``), kept to measure the overlap against.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from mote.pipeline.clip.encoder import ClipEncoder

BUFFERS = 2  # double buffering: one batch copied in while the other is encoded


@dataclass
class Finished:
    """A batch's float16 (n, D) embeddings, its caller's tag, and the encoder's time on it."""

    tag: Any
    embeddings: np.ndarray
    seconds: float


class EncodeQueue(Protocol):
    """Batches in, embeddings out in the same order; ``full`` while no batch may start."""

    @property
    def busy(self) -> bool: ...

    @property
    def full(self) -> bool: ...

    def start(self, images: torch.Tensor, n: int, tag: Any) -> None: ...

    def ready(self) -> list[Finished]: ...

    def finish(self) -> Finished: ...


class PlainEncoding:
    """Each batch encoded as it starts: ``encode_frames`` on the frames where they lie."""

    def __init__(self, clip: ClipEncoder) -> None:
        self.clip = clip
        self._done: deque[Finished] = deque()

    @property
    def busy(self) -> bool:
        return bool(self._done)

    @property
    def full(self) -> bool:
        return False

    def start(self, images: torch.Tensor, n: int, tag: Any) -> None:
        begin = time.perf_counter()
        embeddings = self.clip.encode_frames(images)[:n].to(torch.float16).cpu().numpy()
        self._done.append(Finished(tag, embeddings, time.perf_counter() - begin))

    def ready(self) -> list[Finished]:
        done, self._done = list(self._done), deque()
        return done

    def finish(self) -> Finished:
        return self._done.popleft()


class CudaEvents:
    """The side copy stream and the events between it, the compute stream and the host."""

    def __init__(self, device: torch.device) -> None:
        self.copy_stream = torch.cuda.Stream(device)
        self.compute_stream = torch.cuda.current_stream(device)

    def copying(self) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(self.copy_stream)

    def record(self, stream: torch.cuda.Stream) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def record_copy(self) -> torch.cuda.Event:
        return self.record(self.copy_stream)

    def compute_waits(self, event: torch.cuda.Event) -> None:
        self.compute_stream.wait_event(event)

    def record_done(self) -> torch.cuda.Event:
        return self.record(self.compute_stream)


class NullEvent:
    """An event that is always complete: the CPU runs every step when it is called."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


class NullEvents:
    """``CudaEvents``' CPU twin: no stream, no waits, so the staged path runs in CI."""

    def copying(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def record_copy(self) -> NullEvent:
        return NullEvent()

    def compute_waits(self, event: NullEvent) -> None:
        return None

    def record_done(self) -> NullEvent:
        return NullEvent()


@dataclass
class _InFlight:
    tag: Any
    buffer: int
    n: int
    done: Any  # torch.cuda.Event or NullEvent: the embeddings are in the output buffer
    begin: float


class StagedEncoding:
    """Pinned double buffers and a side copy stream in front of a ``ClipEncoder``.

    ``batch_shape`` is (B, S, S, 3). Pinned only when CUDA is available (pinning needs it).
    """

    def __init__(self, clip: ClipEncoder, batch_shape: tuple[int, ...]) -> None:
        self.clip = clip
        cuda = clip.device.type == "cuda"
        pin = torch.cuda.is_available()
        self.host = [_empty(batch_shape, torch.uint8, pin) for _ in range(BUFFERS)]
        self.out = [_empty((batch_shape[0], clip.dim), torch.float16, pin) for _ in range(BUFFERS)]
        # The device copy the encoder reads; on the CPU the staging buffer itself.
        if cuda:
            self.device_in = [torch.empty_like(h, device=clip.device) for h in self.host]
        else:
            self.device_in = self.host
        self.events: CudaEvents | NullEvents = CudaEvents(clip.device) if cuda else NullEvents()
        self._free = list(range(BUFFERS))
        self._flight: deque[_InFlight] = deque()
        self._last_end = 0.0

    @property
    def busy(self) -> bool:
        return bool(self._flight)

    @property
    def full(self) -> bool:
        return not self._free

    def start(self, images: torch.Tensor, n: int, tag: Any) -> None:
        """Stage ``images`` (uint8 (B, S, S, 3) on the host) and queue its encoding."""
        if self.full:
            raise RuntimeError("both staging buffers are in flight: finish() one first")
        index = self._free.pop(0)
        begin = time.perf_counter()
        self.host[index].copy_(images)  # the caller's buffer is free again when this returns
        with self.events.copying():
            self.device_in[index].copy_(self.host[index], non_blocking=True)
            copied = self.events.record_copy()
        self.events.compute_waits(copied)
        features = self.clip.encode_device_frames(self.device_in[index])
        self.out[index].copy_(features.to(torch.float16), non_blocking=True)
        self._flight.append(_InFlight(tag, index, n, self.events.record_done(), begin))

    def ready(self) -> list[Finished]:
        """The batches already encoded, oldest first, without waiting."""
        done = []
        while self._flight and self._flight[0].done.query():
            done.append(self.finish())
        return done

    def finish(self) -> Finished:
        """Wait for the oldest batch; its buffers are free for the next one."""
        batch = self._flight.popleft()
        batch.done.synchronize()
        embeddings = self.out[batch.buffer][: batch.n].numpy().copy()
        self._free.append(batch.buffer)
        end = time.perf_counter()
        # Busy time, not latency: batches in flight together overlap, counted once.
        seconds = end - max(batch.begin, self._last_end)
        self._last_end = end
        return Finished(batch.tag, embeddings, seconds)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=pin)


def encode_queue(clip: ClipEncoder, batch_shape: tuple[int, ...], staging: bool) -> EncodeQueue:
    """The staged queue (the default), or the plain one to compare it against."""
    return StagedEncoding(clip, batch_shape) if staging else PlainEncoding(clip)
