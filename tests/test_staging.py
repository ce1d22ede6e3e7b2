"""Stage one's staged path (``pipeline/clip/staging.py``) on the CPU: the same code as on a GPU
with ``NullEvents`` for the stream, so CI keeps it alive. It must give the plain path's
embeddings bit for bit, in order, and reuse its two staging buffers for every batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoding import BatchedEncoder, LocalBackend
from mote.pipeline.clip.staging import (
    BUFFERS,
    EncodeQueue,
    NullEvents,
    PlainEncoding,
    StagedEncoding,
)

BATCH = 4


@pytest.fixture(scope="module")
def clip() -> ClipEncoder:
    return build_clip("mote-tiny", "none", device="cpu", seed=0)


def batches(clip: ClipEncoder, count: int) -> list[torch.Tensor]:
    size = clip.preprocess.size
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (BATCH, size, size, 3), generator=g).byte() for _ in range(count)]


def run(queue: EncodeQueue, frames: list[torch.Tensor]) -> list[tuple[int, np.ndarray]]:
    """Every batch through ``queue`` as the encoder process feeds it (the last one short)."""
    out = []
    for i, images in enumerate(frames):
        if queue.full:
            out.append(queue.finish())
        queue.start(images, BATCH - (i == len(frames) - 1), i)
        out += queue.ready()
    while queue.busy:  # every batch still in flight, the oldest first
        out.append(queue.finish())
    return [(batch.tag, batch.embeddings) for batch in out]


def test_staged_embeddings_equal_the_plain_ones_bit_for_bit(clip) -> None:
    frames = batches(clip, 5)
    staged = StagedEncoding(clip, tuple(frames[0].shape))
    assert isinstance(staged.events, NullEvents)  # the CPU twin of the CUDA stream
    plain, got = run(PlainEncoding(clip), frames), run(staged, frames)
    assert [tag for tag, _ in got] == list(range(5))
    for (_, a), (_, b) in zip(plain, got, strict=True):
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    assert len(got[-1][1]) == BATCH - 1


def test_the_staging_buffers_are_allocated_once_and_reused(clip) -> None:
    frames = batches(clip, 6)
    staged = StagedEncoding(clip, tuple(frames[0].shape))
    pointers = [t.data_ptr() for t in (*staged.host, *staged.device_in, *staged.out)]
    run(staged, frames)
    assert [t.data_ptr() for t in (*staged.host, *staged.device_in, *staged.out)] == pointers
    assert len({t.data_ptr() for t in staged.host}) == BUFFERS
    # on the CPU the encoder reads the staging buffer itself: no second copy
    assert staged.device_in is staged.host
    # the last batch's frames are what its buffer holds: the copy went through it
    assert any(torch.equal(buffer, frames[-1]) for buffer in staged.host)


def test_a_third_batch_waits_for_a_free_buffer(clip) -> None:
    frames = batches(clip, 3)
    staged = StagedEncoding(clip, tuple(frames[0].shape))
    staged.start(frames[0], BATCH, 0)
    staged.start(frames[1], BATCH, 1)
    assert staged.full
    with pytest.raises(RuntimeError, match="finish"):
        staged.start(frames[2], BATCH, 2)
    assert [b.tag for b in staged.ready()] == [0, 1] and not staged.busy


def test_the_local_backend_encodes_videos_the_same_staged_or_not(clip) -> None:
    size = clip.preprocess.size
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (2, t, size, size, 3), np.uint8) for t in (3, 1, 4, 2)]
    results = {}
    for staging in (True, False):
        backend = LocalBackend(clip, BATCH, staging=staging)
        assert isinstance(backend._queue, StagedEncoding if staging else PlainEncoding)
        encoder = BatchedEncoder(backend)
        done = [item for i, v in enumerate(videos) for item in encoder.add(i, v)]
        results[staging] = dict(done + encoder.flush())
    assert sorted(results[True]) == list(range(len(videos)))
    for i, video in enumerate(videos):
        assert results[True][i].shape == (*video.shape[:2], clip.dim)
        assert results[True][i].tobytes() == results[False][i].tobytes()
