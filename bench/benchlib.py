"""What the benchmarks share: a synthetic feature store written with the store API, counting aten
operator calls with the torch profiler, device syncs and the machine line.

Imported by the scripts in bench/ (``python bench/x.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import platform
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.spec import StoreSpec, VideoResult


def write_store(
    path: Path, videos: int, dim: int, frames: int = 8, classes: int = 400, seed: int = 0
) -> FeatureStore:
    """A store of ``videos`` random fp16 feature clips (1 view), written chunk by chunk with the
    store API, as ``mote extract`` writes one (no videos are decoded)."""
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
    rng = np.random.default_rng(seed)
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
    idx = np.arange(frames, dtype=np.int32).reshape(1, frames)
    for chunk in range(store.n_chunks):
        start, stop = store.chunk_range(chunk)
        emb = rng.standard_normal((stop - start, 1, frames, dim)).astype(np.float16)
        store.write_chunk(
            chunk, [VideoResult(i, emb[i - start], idx, frames) for i in range(start, stop)]
        )
    store.consolidate()
    return store


def aten_calls(run: Callable[[], object]) -> Counter:
    """Every ``aten::`` event (nested ones included) the profiler sees while ``run()`` runs, by
    operator name. The count does not depend on the machine, only on the code path."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return Counter(ev.name for ev in prof.events() if ev.name.startswith("aten::"))


def sync(device: torch.device) -> None:
    """Wait for the device, so a wall-clock interval covers the work queued in it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def doc_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help is a script's docstring: the first paragraph, then the
    rest as written."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def machine(device: torch.device) -> str:
    """CPU architecture, cores and torch threads, and the GPU's name on CUDA."""
    import os

    line = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return line + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else "")


def ops_table(rows: list[dict], plain: str, fused: str) -> str:
    """An op-count table of docs/performance.md (rows with ``arch``, ``step`` and
    ``aten_ops_per_step``), printed by a bench's ``--markdown`` rather than typed by hand: the
    counts do not depend on the machine, so tests/test_bench_tables.py checks the committed one.
    ``plain`` and ``fused`` head the two count columns."""
    by = {(r["arch"], r["step"]): r["aten_ops_per_step"] for r in rows}
    lines = [f"| arch | aten ops/step {plain} | {fused} | cut |", "|---|---|---|---|"]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        before, after = by[(arch, "plain")], by[(arch, "fused")]
        lines.append(f"| {arch} | {before:,} | {after:,} | {before / after:.1f}x |")
    return "\n".join(lines)
