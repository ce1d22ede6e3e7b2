"""One CLIP encoder process per device, all fed from the caller's batches.

Processes, not threads: each GPU gets its own CUDA context and Python, so G devices encode at
once. They start with ``spawn`` (never fork a process that may hold CUDA or torch threads) and
import mote, which arms the torchvision shim before open_clip loads; never the caller's
``__main__`` (``without_caller_main``), so they start from ``python -`` and a REPL too.

Batches never go through a pipe: each device owns ``SLOTS_PER_DEVICE`` uint8 buffers of shape
(B, S, S, 3) in shared memory (``RawArray``: /dev/shm when it has room, else a temporary file).
The caller fills a free buffer of the least busy device and sends ``(slot, batch_id, n)``; the
float16 embeddings (B x D x 2 bytes) come back through the pipe, in any order across devices.
With several buffers per device, the next batch is copied while the current one is encoded;
in the process, ``staging`` copies it on to the GPU while the one before is encoded.

A process that dies (CUDA out of memory, a crash, the OOM killer) becomes one ``EncoderFailed``
naming its device, never a hang: the caller waits on the processes' sentinels as well as their
pipes. The processes ignore Ctrl-C (the caller handles it) and exit when the caller's end of
their pipe closes, so a killed caller leaves no orphans; ``close`` ends them in any case.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait

import numpy as np
import torch

from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoding import EncodedBatch, Slot
from mote.pipeline.clip.staging import EncodeQueue, encode_queue
from mote.pipeline.errors import EncoderFailed
from mote.pipeline.spawning import without_caller_main
from mote.pipeline.threads import set_threads

SLOTS_PER_DEVICE = 3  # one encoding, one filled and waiting, one being filled
STOP_GRACE_S = 10.0  # how long an idle encoder may take to exit before it is killed

ClipFactory = Callable[[str], ClipEncoder]  # device name -> the CLIP; must pickle (spawn)


def _encoder_main(
    factory: ClipFactory,
    device: str,
    buffers,
    shape: tuple,
    threads: int,
    conn: Connection,
    staging: bool = True,
) -> None:
    """An encoder process: build the CLIP, say ready, then encode slots until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    try:
        if device.startswith("cpu"):
            set_threads(threads)  # the caller's policy count: same sums on every encoder
        elif device.startswith("cuda"):
            torch.cuda.set_device(device)
        slots = torch.from_numpy(np.frombuffer(buffers, np.uint8).reshape(shape))
        clip = factory(device)
        queue = encode_queue(clip, shape[1:], staging)
        conn.send(("ready", clip.dim, clip.preprocess.size))
        _serve(conn, slots, queue)
    except (EOFError, BrokenPipeError):
        return  # the caller is gone
    except BaseException as error:  # noqa: BLE001 (reported to the caller, who raises it)
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        with contextlib.suppress(OSError):
            conn.send(("error", detail))


def _serve(conn: Connection, slots: torch.Tensor, queue: EncodeQueue) -> None:
    """Start each slot as it arrives and send its embeddings once encoded. The next slot is
    read (and its copy started) while the last one is encoded; a batch is waited for only
    when both staging buffers are in flight or no slot is waiting."""
    while True:
        if queue.full or (queue.busy and not conn.poll()):
            finished = [queue.finish()]
        else:
            message = conn.recv()
            if message is None:  # nothing left to flush: skip torch's slow interpreter teardown
                os._exit(0)
            slot, batch_id, n = message
            queue.start(slots[slot], n, (slot, batch_id))
            finished = queue.ready()
        for batch in finished:
            conn.send(("done", *batch.tag, batch.embeddings, batch.seconds))


@contextlib.contextmanager
def _without_sigint() -> Iterator[None]:
    """Children started in here inherit an ignored SIGINT, so a Ctrl-C during their imports
    cannot print a traceback from each of them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of host memory? the OOM killer sends it)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"


class _Encoder:
    """One encoder process, its pipe and its shared batch buffers."""

    def __init__(
        self,
        context: mp.context.SpawnContext,
        factory: ClipFactory,
        device: str,
        shape: tuple[int, ...],
        threads: int,
        staging: bool,
    ) -> None:
        self.device = device
        self.buffers = context.RawArray(ctypes.c_uint8, int(np.prod(shape)))
        self.slots = np.frombuffer(self.buffers, np.uint8).reshape(shape)
        self.free = list(range(shape[0]))
        self.busy: dict[int, int] = {}  # slot -> batch id
        self.ready = False
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_encoder_main,
            args=(factory, device, self.buffers, shape, threads, child, staging),
            name=f"mote-encoder-{device}",
            daemon=True,
        )
        self.process.start()
        child.close()


class EncoderPool:
    """An ``EncoderBackend`` with one encoder process per entry of ``devices``.

    ``factory(device)`` builds the CLIP in each process (the same model and weights everywhere);
    ``dim`` and ``image_size`` are what the caller's store expects of it. ``cpu_threads``: torch
    threads of each CPU encoder (see ``stages.extract`` for why it is the caller's count).
    ``staging``: pinned buffers and the copy overlapping the encoder (``clip.staging``).
    """

    def __init__(
        self,
        factory: ClipFactory,
        devices: Sequence[torch.device | str],
        batch_size: int,
        image_size: int,
        dim: int,
        cpu_threads: int = 1,
        staging: bool = True,
    ) -> None:
        self.devices = [str(d) for d in devices]
        self.batch_size = batch_size
        self.image_shape = (image_size, image_size, 3)
        self.dim = dim
        shape = (SLOTS_PER_DEVICE, batch_size, *self.image_shape)
        context = mp.get_context("spawn")
        self._encoders: list[_Encoder] = []
        try:
            with _without_sigint(), without_caller_main():
                for device in self.devices:
                    encoder = _Encoder(context, factory, device, shape, cpu_threads, staging)
                    self._encoders.append(encoder)
        except BaseException:
            self.close()
            raise

    def free_slot(self) -> Slot | None:
        """A free buffer of the encoder with the fewest batches in flight (first on a tie)."""
        open_ = [(len(e.busy), i) for i, e in enumerate(self._encoders) if e.free]
        if not open_:
            return None
        _, position = min(open_)
        encoder = self._encoders[position]
        index = encoder.free.pop()
        return Slot(encoder.slots[index], position, index)

    def submit(self, slot: Slot, batch_id: int, n: int) -> None:
        encoder = self._encoders[slot.encoder]
        encoder.busy[slot.index] = batch_id
        try:
            encoder.conn.send((slot.index, batch_id, n))
        except (BrokenPipeError, OSError):
            self._raise_dead(encoder)

    def collect(self, block: bool) -> list[EncodedBatch]:
        if block and not any(e.busy for e in self._encoders):
            block = False  # nothing in flight: nothing to wait for
        by_handle: dict[object, tuple[_Encoder, bool]] = {}
        for encoder in self._encoders:
            by_handle[encoder.conn] = (encoder, False)
            by_handle[encoder.process.sentinel] = (encoder, True)
        done: list[EncodedBatch] = []
        for handle in wait(list(by_handle), None if block else 0):
            encoder, died = by_handle[handle]
            done += self._drain(encoder)
            if died:
                self._raise_dead(encoder)
        return done

    def _drain(self, encoder: _Encoder) -> list[EncodedBatch]:
        """Every message waiting in an encoder's pipe; an error message is raised."""
        position = self._encoders.index(encoder)
        done: list[EncodedBatch] = []
        try:
            while encoder.conn.poll():
                kind, *body = encoder.conn.recv()
                if kind == "ready":
                    self._check_ready(encoder, *body)
                elif kind == "done":
                    slot, batch_id, embeddings, seconds = body
                    del encoder.busy[slot]
                    encoder.free.append(slot)
                    done.append(EncodedBatch(batch_id, position, embeddings, seconds))
                else:
                    raise EncoderFailed(self._failure(encoder, body[0]))
        except (EOFError, OSError):
            self._raise_dead(encoder)
        return done

    def _check_ready(self, encoder: _Encoder, dim: int, size: int) -> None:
        if (dim, size) != (self.dim, self.image_shape[0]):
            raise EncoderFailed(
                f"the encoder process on {encoder.device} built a CLIP of width {dim} and "
                f"{size} px, but this store needs {self.dim} and {self.image_shape[0]} px"
            )
        encoder.ready = True

    def _failure(self, encoder: _Encoder, detail: str) -> str:
        stage = "encoding" if encoder.ready else "building its CLIP"
        hint = "; a smaller --batch-size may fit" if "out of memory" in detail.lower() else ""
        return f"the encoder process on {encoder.device} failed while {stage}: {detail}{hint}"

    def _raise_dead(self, encoder: _Encoder) -> None:
        encoder.process.join(1.0)
        raise EncoderFailed(
            f"the encoder process on {encoder.device} (pid {encoder.process.pid}) "
            f"{_death(encoder.process.exitcode)}; finished chunks are kept: rerun the same "
            "command to continue"
        )

    def close(self) -> None:
        """Stop every encoder: idle ones are asked to exit, busy or slow ones are killed."""
        for encoder in self._encoders:
            if encoder.busy:
                encoder.process.kill()
                continue
            with contextlib.suppress(OSError):
                encoder.conn.send(None)
        deadline = time.monotonic() + STOP_GRACE_S
        for encoder in self._encoders:
            encoder.process.join(max(0.0, deadline - time.monotonic()))
            if encoder.process.is_alive():
                encoder.process.kill()
                encoder.process.join()
            encoder.conn.close()
        self._encoders = []

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
