"""What extracting a video gives the store, and what a run did, in total and per device."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mote.cache_schema.spec import VideoResult
from mote.pipeline.video.decode_pool import DecodedVideo


def failed_result(video: DecodedVideo) -> VideoResult:
    """A video that could not be decoded, with the reason the store records."""
    return VideoResult(video.index, None, None, video.num_frames, video.failure())


def done_result(video: DecodedVideo, embeddings: np.ndarray) -> VideoResult:
    """An encoded video; non-finite embeddings (fp16 overflow, a broken frame) fail it."""
    if not np.isfinite(embeddings).all():
        return VideoResult(
            video.index, None, None, video.num_frames, "the encoder returned non-finite embeddings"
        )
    return VideoResult(video.index, embeddings, video.frame_indices, video.num_frames)


@dataclass
class ExtractCounts:
    """Videos done and failed and images encoded by one run; ``devices`` has one entry per
    encoder (device, videos, images, busy_s; dask workers add worker and cuda_visible_devices)."""

    done: int = 0
    failed: int = 0
    images: int = 0
    devices: list[dict] = field(default_factory=list)
