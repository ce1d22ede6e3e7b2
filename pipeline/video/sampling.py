"""Frame indices to decode, computed before any decoding (spec section 7.1).

Pure functions of the frame count ``n``, the frames per clip ``T`` and the number of clips ``M``;
the extract stage stores what they return next to the features.

* Training: ``seg = (n - 1) / T``; segment i spans ``round(seg*i) .. round(seg*(i+1))`` (numpy
  half-to-even rounding), both ends inclusive, and one index is drawn uniformly from each.
* Evaluation: ``tick = n / T``; clip offsets ``floor(linspace(0, tick - 1, M))``; frame x of
  clip m is ``floor(o_m + tick*x) mod n``.

Short videos (n < T) use the same formulas, so frames repeat. The evaluation rule uses a true
floor as the spec writes it: for n < T and M > 1 the offsets ``floor(linspace(0, tick-1, M))`` can
be -1, which the ``mod n`` wraps to the last frame.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mote.pipeline.errors import ConfigError


def _check(n: int, frames: int, clips: int = 1) -> None:
    """Reject counts that give no valid index."""
    if n < 1:
        raise ValueError(f"the video has {n} decoded frames; sampling needs at least 1.")
    if frames < 1 or clips < 1:
        raise ValueError(f"need frames >= 1 and clips >= 1, got frames={frames}, clips={clips}.")


def train_bounds(n: int, frames: int) -> np.ndarray:
    """The T+1 segment bounds of the training rule; segment i is ``bounds[i]..bounds[i+1]``."""
    _check(n, frames)
    seg = (n - 1) / frames
    return np.round(seg * np.arange(frames + 1)).astype(np.int64)


def train_indices(n: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random frame per segment, inclusive of both segment ends: int64 (frames,)."""
    bounds = train_bounds(n, frames)
    return rng.integers(bounds[:-1], bounds[1:], endpoint=True).astype(np.int64)


def eval_indices(n: int, frames: int, clips: int) -> np.ndarray:
    """The deterministic evaluation clips: int64 (clips, frames)."""
    _check(n, frames, clips)
    tick = n / frames
    offsets = np.floor(np.linspace(0.0, tick - 1.0, clips))
    grid = offsets[:, None] + tick * np.arange(frames)[None, :]
    return np.mod(np.floor(grid).astype(np.int64), n)


def sample_indices(
    n: int,
    frames: int,
    clips: int,
    mode: Literal["eval", "train"],
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices (clips, frames) for either rule; each training clip is an independent draw."""
    if mode == "eval":
        return eval_indices(n, frames, clips)
    if mode == "train":
        if rng is None:
            raise ValueError(
                "mode='train' draws random frames: pass rng=np.random.default_rng(seed)."
            )
        _check(n, frames, clips)
        return np.stack([train_indices(n, frames, rng) for _ in range(clips)])
    raise ValueError(f"unknown sampling mode {mode!r}: use 'eval' or 'train'.")


def parse_views(views: str) -> tuple[int, int]:
    """'4x3' -> (4 clips, 3 crops), as ``--views`` spells a view layout; crops must be 1 or 3
    (spec section 7.3)."""
    try:
        clips, crops = (int(part) for part in views.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"--views '{views}': expected CLIPSxCROPS such as 1x1, 3x1 or 4x3"
        ) from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views '{views}': clips must be >= 1 and crops 1 or 3")
    return clips, crops
