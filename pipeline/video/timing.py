"""When a frame is shown: a frame index in seconds, from the container's average frame rate.

The store records which frames were sampled (``frame_indices``), not when; a hit's matching
moment is a time to start playing at, so the rate is read from the file when asked (one open
of the container, kept for the process). Variable frame rate files get the average's time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import av


@functools.lru_cache(maxsize=4096)
def frame_rate(path: str) -> float | None:
    """Frames per second of the first video stream of ``path``; None when it cannot be read."""
    if not Path(path).is_file():
        return None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return None
    return float(rate) if rate else None


def frame_seconds(path: str, frame: int) -> float | None:
    """The time of frame ``frame`` of the video at ``path`` in seconds (3 decimals), or None."""
    rate = frame_rate(str(path))
    return None if rate is None or rate <= 0 else round(frame / rate, 3)
