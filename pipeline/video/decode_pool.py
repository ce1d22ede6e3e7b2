"""Decode and crop videos in worker processes, with a per-video timeout and crash isolation.

Each worker owns one pipe and decodes one video at a time with one decode thread. Before a
video it arms a ``SIGALRM`` timer with the default action (terminate): a decoder stuck inside
C code is killed by the kernel, and a decoder that segfaults only takes its worker down. The
pool notices the dead worker, records that video as failed with the reason, re-queues the
worker's other videos and starts a fresh worker, so one bad file never stops or hangs a run.

A worker is a fresh interpreter that imports this module and nothing of its caller's: not
multiprocessing's spawn or forkserver, which re-import the caller's ``__main__`` in every worker
(a script read from ``python -`` has no file to re-import, and a script without a
``__main__`` guard would run again in each worker).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mote.pipeline.errors import DecodeError, Unreachable
from mote.pipeline.locations import join
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.remote_videos import SPILL_DIR_ENV, SPILL_PREFIX
from mote.pipeline.video.sampling import sample_indices
from mote.pipeline.video.transforms import crop_views

if TYPE_CHECKING:  # only for the hint: decode workers never import zarr
    from mote.cache_schema.spec import StoreSpec

PER_WORKER_DEPTH = 2  # videos queued per worker: one decoding, one waiting, so no worker idles


@dataclass(frozen=True)
class DecodeTask:
    """One video to decode: where it is and how to sample and crop it."""

    index: int  # row of the video in the store
    path: str
    frames: int
    clips: int
    crops: int
    size: int
    mode: str = "eval"  # "eval" or "train" (see pipeline.sampling)
    seed: int = 0
    backend: str = "auto"
    interpolation: str = "bicubic"  # the resize the store records (open_clip's preprocess)
    storage_options: dict[str, Any] | None = None  # fsspec options when ``path`` is a URL


def store_tasks(
    spec: StoreSpec,
    video_ids: tuple[str, ...],
    rows,
    root: Path | str,
    backend: str = "auto",
    storage_options: dict[str, Any] | None = None,
) -> list[DecodeTask]:
    """One DecodeTask per store row, sampled and cropped exactly as the store records;
    ``root`` is a folder or a URL prefix (``s3://bucket/videos``) the ids are joined to.

    Extraction, repair and ``mote info --sample`` all build their tasks here, so a re-encoded
    video is compared with the same frames the store was made from.
    """
    return [
        DecodeTask(
            index=int(row),
            path=join(root, video_ids[row]),
            frames=spec.frames,
            clips=spec.clips,
            crops=spec.crops,
            size=int(spec.preprocess["size"]),
            mode=spec.sampling,
            seed=spec.sampling_seed,
            backend=backend,
            interpolation=spec.preprocess["interpolation"],
            storage_options=storage_options,
        )
        for row in rows
    ]


@dataclass
class DecodedVideo:
    """The cropped uint8 views of one video, or why it has none."""

    index: int
    views: np.ndarray | None  # uint8 (views, frames, size, size, 3), view = clip * crops + crop
    frame_indices: np.ndarray | None  # int32 (views, frames)
    num_frames: int
    reason: str = ""  # non-empty: the video failed
    unreachable: bool = False  # its server could not be reached: the run stops, nothing failed

    @property
    def ok(self) -> bool:
        return not self.reason

    def failure(self) -> str:
        """Why the video failed, to record; an unreachable server raises ``Unreachable``
        instead (exit 4), since the video may be fine."""
        if self.unreachable:
            raise Unreachable(self.reason)
        return self.reason


def decode_one(task: DecodeTask) -> DecodedVideo:
    """Decode, sample and crop one video; any decoding problem becomes a failed result."""
    num_frames = 0
    try:
        with open_video(task.path, task.backend, task.storage_options) as video:
            num_frames = video.num_frames
            if num_frames < 1:
                raise DecodeError("no frames")
            rng = np.random.default_rng([task.seed, task.index])
            indices = sample_indices(num_frames, task.frames, task.clips, task.mode, rng)
            frames = video.get(indices.reshape(-1))  # (clips*T, H, W, 3)
        crops = crop_views(
            frames, task.size, task.crops, task.interpolation
        )  # (crops, clips*T, S, S, 3)
    except Unreachable as error:
        return DecodedVideo(task.index, None, None, num_frames, str(error), unreachable=True)
    except DecodeError as error:
        return DecodedVideo(task.index, None, None, num_frames, str(error) or "decode error")
    except MemoryError:
        return DecodedVideo(task.index, None, None, num_frames, "out of memory while decoding")
    except Exception as error:  # noqa: BLE001 (one bad video must never stop a run)
        reason = f"unexpected {type(error).__name__} while decoding: {error}"
        return DecodedVideo(task.index, None, None, num_frames, reason)
    s = task.size
    views = crops.reshape(task.crops, task.clips, task.frames, s, s, 3).transpose(1, 0, 2, 3, 4, 5)
    views = np.ascontiguousarray(views.reshape(task.clips * task.crops, task.frames, s, s, 3))
    frame_indices = np.repeat(indices.astype(np.int32), task.crops, axis=0)
    return DecodedVideo(task.index, views, frame_indices, num_frames)


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive (task, timeout), decode under an alarm, send the result back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the alarm terminates a stuck decoder
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        task, timeout_s = message
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        result = decode_one(task)
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


def serve(fd: int) -> None:
    """A worker process's entry point: the worker loop on the socket its parent passed down."""
    _worker_main(Connection(fd))


# What a worker runs: the parent's import path (argv[2:]), then ``serve`` on the socket (argv[1]).
_WORKER_CODE = (
    "import sys; sys.path[:] = sys.argv[2:]; "
    "from mote.pipeline.video.decode_pool import serve; serve(int(sys.argv[1]))"
)


def _death_reason(exitcode: int | None, timeout_s: float) -> str:
    if exitcode == -signal.SIGALRM:
        return f"decode timed out after {timeout_s:g} s (worker killed)"
    if exitcode is not None and exitcode < 0:
        return f"decoder crashed ({signal.Signals(-exitcode).name})"
    return f"decoder process exited with code {exitcode}"


class _Worker:
    """One decode process and its end of the socket pair.

    A new interpreter, never a fork of the caller (which may hold torch threads or CUDA); it
    learns where mote is from the caller's ``sys.path``. Its socket reaching end of file is how
    the pool learns that it died. It spills remote videos into a folder of its own
    (``remote.py``), removed when it stops, so a worker killed mid-download leaves nothing.
    """

    def __init__(self) -> None:
        self.spill = tempfile.mkdtemp(prefix=SPILL_PREFIX)
        ours, theirs = socket.socketpair()
        with theirs:
            fd = theirs.fileno()
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(fd), *map(str, sys.path)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                env={**os.environ, SPILL_DIR_ENV: self.spill},
            )
        self.conn = Connection(ours.detach())
        self.inflight: deque[tuple[DecodeTask, float]] = deque()  # (task, timeout)
        self.dead = False

    def stop(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the process to end, then kill it; close the socket."""
        try:
            self.process.wait(max(0.0, grace_s))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()
        shutil.rmtree(self.spill, ignore_errors=True)


def default_workers() -> int:
    """One decode worker per available core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class DecodePool:
    """A fixed set of decode processes fed through pipes; results come back as they finish.

    ``workers=0`` decodes in the calling process (no isolation, no timeout): for debugging and
    for callers that are already one-process-per-core, such as dask workers.
    """

    def __init__(self, workers: int, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self._workers = [_Worker() for _ in range(workers)]
        self._local: deque[DecodeTask] = deque()

    @property
    def capacity(self) -> int:
        """How many tasks may be in flight before submit should wait for results."""
        return max(1, len(self._workers) * PER_WORKER_DEPTH)

    @property
    def inflight(self) -> int:
        return len(self._local) + sum(len(w.inflight) for w in self._workers)

    def submit(self, task: DecodeTask) -> None:
        """Queue a video on the least busy worker, under the pool's current timeout."""
        if not self._workers:
            self._local.append(task)
            return
        self._send(task, self.timeout_s)

    def _send(self, task: DecodeTask, timeout_s: float) -> None:
        worker = min(self._workers, key=lambda w: len(w.inflight))
        worker.inflight.append((task, timeout_s))
        try:
            worker.conn.send((task, timeout_s))
        except (BrokenPipeError, OSError):
            pass  # the worker just died: its sentinel fires and _replace re-queues the task

    def results(self, timeout_s: float | None = None) -> Iterator[DecodedVideo]:
        """Yield finished videos; waits up to ``timeout_s`` for the first one."""
        if self._local:
            yield decode_one(self._local.popleft())
            return
        if not self._workers or self.inflight == 0:
            return
        by_conn = {w.conn: w for w in self._workers}
        dead: list[_Worker] = []
        for conn in wait(list(by_conn), timeout_s):
            worker = by_conn[conn]
            yield from self._drain(worker)
            if worker.dead:
                dead.append(worker)
        for worker in dead:
            yield from self._replace(worker)

    def _drain(self, worker: _Worker) -> Iterator[DecodedVideo]:
        """Yield the results waiting on a worker's socket; end of file: the worker died."""
        while worker.inflight:
            try:
                if not worker.conn.poll():
                    return
                result: DecodedVideo = worker.conn.recv()
            except (EOFError, OSError):
                worker.dead = True
                return
            worker.inflight.popleft()
            yield result

    def _replace(self, worker: _Worker) -> Iterator[DecodedVideo]:
        """A worker died: fail its current video, restart it and re-queue the rest."""
        worker.stop(grace_s=5)
        pending = list(worker.inflight)
        self._workers.remove(worker)
        self._workers.append(_Worker())
        if pending:
            (culprit, timeout_s), pending = pending[0], pending[1:]
            reason = _death_reason(worker.process.returncode, timeout_s)
            yield DecodedVideo(culprit.index, None, None, 0, reason)
        for task, timeout_s in pending:
            self._send(task, timeout_s)

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for worker in self._workers:
            worker.stop(deadline - time.monotonic())
        self._workers = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
