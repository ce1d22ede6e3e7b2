"""Benchmark stage two (not a test): is training from the cache data-bound, and how much does
the cache save?

In one run, on a store of synthetic features written with the store API:
  (a) training steps/s with batches fed from the store (the train-temporal data path)
  (b) the same steps on tensors already in memory on the device
      -> data overhead = 1 - a/b (target <= 10%)
  (c) one epoch from the cache vs the same epoch if the CLIP encoder had to run: the encoder's
      images/s is measured on the same device (target >= 50x)

    python bench/train_temporal.py --videos 20000 --dim 512 [--device cuda] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mote.cache_schema.store import FeatureStore, StoreSpec, VideoResult
from mote.pipeline.clip.build import build_clip
from mote.pipeline.device import resolve_device
from mote.pipeline.temporal.features import InMemoryFeatures, StreamingFeatures
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.train.step import LossModule, train_step
from mote.stages.train_temporal import TrainConfig, build_optimizer, model_config

CLIP_FOR_DIM = {512: "ViT-B-16", 768: "ViT-L-14", 64: "mote-tiny"}


def write_store(path: Path, videos: int, dim: int, frames: int, classes: int) -> FeatureStore:
    """A store of `videos` random feature clips, written chunk by chunk with the store API."""
    spec = StoreSpec(
        model="bench",
        pretrained="none",
        weights_id="random:seed=0",
        dim=dim,
        frames=frames,
        clips=1,
        crops=1,
        sampling="eval",
        sampling_seed=0,
        preprocess={"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"},
        dataset="bench",
        split="train",
        class_names=tuple(f"class {i}" for i in range(classes)),
        tool_version="bench",
    )
    rng = np.random.default_rng(0)
    labels = rng.integers(classes, size=videos)
    text = rng.standard_normal((classes, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    store = FeatureStore.create(
        path,
        spec,
        [f"v{i}.mp4" for i in range(videos)],
        labels,
        text,
        chunk_videos=64,
        overwrite=True,
    )
    for chunk in range(store.n_chunks):
        start, stop = store.chunk_range(chunk)
        emb = rng.standard_normal((stop - start, 1, frames, dim)).astype(np.float16)
        idx = np.tile(np.arange(frames, dtype=np.int32), (1, 1))
        store.write_chunk(
            chunk, [VideoResult(i, emb[i - start], idx, frames) for i in range(start, stop)]
        )
    store.consolidate()
    return store


def timed_steps(model, optimizer, batches, text, cfg, device, steps: int) -> float:
    """Steps per second over `steps` steps after 3 warm-up steps; batches yields (e, y)."""
    generators = [torch.Generator().manual_seed(k) for k in range(cfg.micro_batches)]
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    precision = "fp16" if scaler is not None else "fp32"
    losses = LossModule(model, None)
    model.train()
    for i, (e, y) in enumerate(batches):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if i == steps + 3:
            break
        train_step(losses, optimizer, e, y, text, generators, scaler=scaler, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def from_store(source, batch: int, device):
    rng = np.random.default_rng(1)
    while True:
        for features, labels in source.batches(batch, rng):
            yield (
                torch.from_numpy(features).to(device, non_blocking=True),
                torch.from_numpy(labels).to(device, non_blocking=True),
            )


def from_memory(features: torch.Tensor, labels: torch.Tensor, batch: int):
    g = torch.Generator(device=features.device).manual_seed(1)
    while True:
        order = torch.randperm(len(labels), generator=g, device=features.device)
        for start in range(0, len(labels) - batch + 1, batch):
            rows = order[start : start + batch]
            yield features[rows], labels[rows]


def encoder_images_per_s(dim: int, device, batch: int) -> tuple[str, float]:
    """The CLIP visual tower that makes D-wide features, timed on random frames."""
    name = CLIP_FOR_DIM.get(dim, "ViT-B-16")
    clip = build_clip(name, "none", str(device))
    size = clip.preprocess.size
    frames = torch.randint(0, 255, (batch, size, size, 3), dtype=torch.uint8)
    clip.encode_frames(frames)
    repeats = 3 if device.type == "cuda" else 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        clip.encode_frames(frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return name, repeats * batch / (time.perf_counter() - start)


def verdict(value: float | None, op: str, target: float) -> str:
    """'met', 'NOT met', or 'skipped' for a figure that was not measured (None or NaN)."""
    if value is None or value != value:
        return "skipped"
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder-batch", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-train-"))
    store_path = work / "features.zarr"
    start = time.perf_counter()
    store = write_store(store_path, args.videos, args.dim, args.frames, args.classes)
    write_s = time.perf_counter() - start

    cfg = TrainConfig(train=store_path, out=work / "run")
    from mote.stages.train_temporal import resolve

    cfg = resolve(cfg, args.dim)
    torch.manual_seed(0)
    model = MoTE(model_config(cfg, args.dim)).to(device)
    text = torch.from_numpy(np.array(store.text_embeddings)).to(device)
    model.set_finetune_text(text)
    optimizer = build_optimizer(model, cfg)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"]

    start = time.perf_counter()
    memory_source = InMemoryFeatures(store)
    load_s = time.perf_counter() - start
    a = timed_steps(
        model,
        optimizer,
        from_store(memory_source, cfg.batch_size, device),
        text,
        cfg,
        device,
        args.steps,
    )
    a_stream = timed_steps(
        model,
        optimizer,
        from_store(StreamingFeatures(store, 16), cfg.batch_size, device),
        text,
        cfg,
        device,
        args.steps,
    )
    features = torch.from_numpy(memory_source.embeddings[:, 0]).to(device)
    labels = torch.from_numpy(memory_source.labels).to(device)
    b = timed_steps(
        model,
        optimizer,
        from_memory(features, labels, cfg.batch_size),
        text,
        cfg,
        device,
        args.steps,
    )

    steps_per_epoch = math.ceil(args.videos / cfg.batch_size)
    epoch_s = steps_per_epoch / a
    encoder, images_s = encoder_images_per_s(
        args.dim, device, args.encoder_batch or (256 if device.type == "cuda" else 8)
    )
    encode_epoch_s = args.videos * args.frames / images_s
    figures = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads"
        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "device": str(device),
        "videos": args.videos,
        "dim": args.dim,
        "batch": cfg.batch_size,
        "micro_batches": cfg.micro_batches,
        "store_write_s": round(write_s, 2),
        "store_load_s": round(load_s, 2),
        "a_steps_per_s_store": round(a, 3),
        "a_steps_per_s_streamed": round(a_stream, 3),
        "b_steps_per_s_memory": round(b, 3),
        "data_overhead": round(1 - a / b, 4),
        "data_overhead_streamed": round(1 - a_stream / b, 4),
        "epoch_from_cache_s": round(epoch_s, 2),
        "encoder": encoder,
        "encoder_images_per_s": round(images_s, 2),
        "epoch_with_encoder_s_estimated": round(encode_epoch_s, 1),
        "cache_speedup": round(encode_epoch_s / epoch_s, 1),
    }
    for key, value in figures.items():
        print(f"{key:>32}: {value}")
    for key, op, target in (("data_overhead", "<=", 0.10), ("cache_speedup", ">=", 50)):
        value = figures[key]
        print(f"target {key} {op} {target}: {value} -> {verdict(value, op, target)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
