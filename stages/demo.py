"""``mote demo``: the whole pipeline on generated videos of moving shapes with ``mote-tiny``.

The classes differ by motion direction (and shape), so temporal order matters: mean pooling of
frame features cannot tell "moving left" from "moving right". Everything runs on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.synthetic import write_motion_dataset
from mote.stages import extract, info


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("mote-demo")
    videos_per_class: int = 16
    seed: int = 0
    decode_workers: int | None = None


def run(cfg: DemoConfig, progress: Progress | None = None, console: Console | None = None) -> dict:
    """Generate the demo videos, extract them with mote-tiny and show the store."""
    progress = progress or NullProgress()
    console = console or Console(quiet=True)
    started = time.perf_counter()
    videos = cfg.workdir / "videos"
    console.print(f"[bold]1/2[/] writing demo videos to {videos}")
    data = write_motion_dataset(videos, videos_per_class=cfg.videos_per_class, seed=cfg.seed)
    console.print(f"    {len(data.class_names)} classes: {', '.join(data.class_names)}")
    store = cfg.workdir / "features.zarr"
    console.print(f"[bold]2/2[/] extracting CLIP (mote-tiny) frame features to {store}")
    summary = extract.run(
        extract.ExtractConfig(
            dataset="list",
            out=store,
            root=data.root,
            list_file=data.list_file,
            labels_file=data.labels_file,
            model="mote-tiny",
            pretrained="none",
            frames=8,
            views="1x1",
            seed=cfg.seed,
            device="cpu",
            decode_workers=cfg.decode_workers,
        ),
        progress,
    )
    seconds = time.perf_counter() - started
    console.print(f"demo finished in {seconds:.1f} s; inspect the store with `mote info {store}`")
    return {"extract": summary, "info": info.run(store), "store": str(store), "seconds": seconds}
