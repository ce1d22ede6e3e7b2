"""Benchmark stage one's host side (issue 29, not a test): does the staged copy overlap the encoder?

Encodes the same random uint8 batches in this process (``LocalBackend``, as a one-device
``mote extract``) through the plain path (pageable copy, then the encoder, in series) and the
staged one (``pipeline/clip/staging.py``: pinned buffers, the copy on a side stream while the
previous batch is encoded), and times the parts alone: the pageable and the pinned copy of one
batch, and the encoder on frames already on the device. Reports images/s of each path, the
staged/plain speed-up, the share of the copy the overlap hid (1.0: all of it), and whether both
paths give the same embeddings bit for bit.

    python bench/staging.py --device cuda --model ViT-B-16 --batch 256 --batches 40 --json s.json
    python bench/staging.py --device cpu --model mote-tiny --batch 8 --batches 4   # CPU twin
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from benchlib import sync

from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoding import BatchedEncoder, LocalBackend


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean milliseconds of ``fn`` after one untimed call, the device synchronised."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - start) / repeats


def encode_all(clip: ClipEncoder, frames: np.ndarray, batch: int, staging: bool) -> tuple:
    """Images/s of ``BatchedEncoder`` over ``frames`` (one 'video' per batch), and the
    embeddings; one warm-up batch first."""
    encoder = BatchedEncoder(LocalBackend(clip, batch, staging=staging))
    encoder.add(-1, frames[:1])
    encoder.flush()
    sync(clip.device)
    start = time.perf_counter()
    done = [item for i, video in enumerate(frames) for item in encoder.add(i, video[None])]
    done += encoder.flush()
    seconds = time.perf_counter() - start
    return frames.shape[0] * batch / seconds, np.stack([e for _, e in sorted(done)])


def part_times(clip: ClipEncoder, batch_frames: np.ndarray, repeats: int) -> dict:
    """One batch's pageable copy, pinned copy and encoder alone, in ms."""
    pageable = torch.from_numpy(batch_frames)
    cuda = clip.device.type == "cuda"
    pinned = pageable.pin_memory() if cuda else pageable
    on_device = pageable.to(clip.device)
    return {
        "copy_pageable_ms": timed_ms(lambda: pageable.to(clip.device), clip.device, repeats),
        "copy_pinned_ms": timed_ms(
            lambda: pinned.to(clip.device, non_blocking=True), clip.device, repeats
        ),
        "encode_ms": timed_ms(lambda: clip.encode_device_frames(on_device), clip.device, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="mote-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved runs of each path.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    clip = build_clip(args.model, args.pretrained, args.device)
    size = clip.preprocess.size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batches, args.batch, size, size, 3), np.uint8)
    runs: dict[bool, list] = {False: [], True: []}
    for _ in range(args.rounds):  # interleaved, the best of each: the machine's noise cut
        for staging in (False, True):
            runs[staging].append(encode_all(clip, frames, args.batch, staging))
    (plain_ips, plain), (staged_ips, staged) = (max(runs[s], key=lambda r: r[0]) for s in runs)
    parts = part_times(clip, frames[0], repeats=min(10, args.batches))
    plain_ms, staged_ms = 1000 * args.batch / plain_ips, 1000 * args.batch / staged_ips
    figures = {
        "device": str(clip.device),
        "gpu": torch.cuda.get_device_name(clip.device) if clip.device.type == "cuda" else None,
        "model": args.model,
        "batch": args.batch,
        "batch_mb": round(frames[0].nbytes / 1e6, 1),
        "plain_images_per_s": round(plain_ips, 1),
        "staged_images_per_s": round(staged_ips, 1),
        "staged_over_plain": round(staged_ips / plain_ips, 3),
        "plain_ms_per_batch": round(plain_ms, 2),
        "staged_ms_per_batch": round(staged_ms, 2),
        **{key: round(value, 2) for key, value in parts.items()},
        # the share of the pageable copy the staged path hid behind the encoder
        "copy_hidden": (
            round((plain_ms - staged_ms) / parts["copy_pageable_ms"], 3)
            if parts["copy_pageable_ms"] >= 0.01
            else None  # the CPU: no copy to hide
        ),
        "identical_embeddings": bool(plain.tobytes() == staged.tobytes()),
        "max_abs_diff": float(np.abs(plain.astype(np.float32) - staged.astype(np.float32)).max()),
    }
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
