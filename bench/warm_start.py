"""Does a warm start from the cache pay off end to end (not a test)? On generated motion videos
with mote-tiny: train MoTE from a store of the training videos (`train-temporal`), then run
`finetune-e2e` twice on the same videos, epochs and seed: cold, and warm (`--init-run` that run,
`--text-from` the store). Prints both runs' val top-1 per epoch and the first epoch at which each
reaches the cold run's final top-1.

The classes are flip-safe (up/down, approaching/receding): spec 7.2 flips training clips
left-right, so left/right classes cannot be learned end to end.

    python bench/warm_start.py --videos-per-class 8 --epochs 100
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.runs.run_folder import RunFolder
from mote.stages import demo, extract, finetune_e2e, train_temporal

CLASSES = tuple(
    f"{shape} {motion}"
    for shape in ("circle", "square")
    for motion in ("moving up", "moving down", "approaching", "receding")
)


def first_reaching(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose val top-1 is >= target, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= target), None)


def stays_from(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) from which every later val top-1 is >= target, or None."""
    epoch = None
    for i, v in enumerate(curve):
        if v is None or v < target:
            epoch = None
        elif epoch is None:
            epoch = i + 1
    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos-per-class", type=int, default=8, help="3/4 train, 1/4 val.")
    parser.add_argument("--epochs", type=int, default=100, help="Epochs of each e2e run.")
    parser.add_argument("--cache-epochs", type=int, default=100, help="train-temporal epochs.")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-warm-"))
    data = write_motion_dataset(work / "videos", CLASSES, args.videos_per_class, seed=3)
    train_list, val_list = demo.split_list(data.list_file)

    store, val_store, cached = work / "train.zarr", work / "val.zarr", work / "cached"
    for out, videos, views, sampling in ((store, train_list, "2x1", "train"),
                                         (val_store, val_list, "1x1", "eval")):  # fmt: skip
        extract.run(
            extract.ExtractConfig(
                out=out,
                **demo.tiny_clip_on(data, videos),
                frames=args.frames,
                views=views,
                sampling=sampling,
                devices="cpu",
                decode_workers=0,
                split=videos.stem,
                overwrite=True,
            )
        )
    shutil.rmtree(cached, ignore_errors=True)
    small = dict(  # both runs: one layer (the warm start copies it), small batches, one draw
        layers=1, warmup_epochs=2, batch_size=args.batch, micro_batches=1, lr=args.lr,
        clip_lr_ratio=1.0, seed=args.seed, device="cpu",
    )  # fmt: skip
    train_temporal.run(
        train_temporal.TrainConfig(
            train=store,
            val=val_store,
            out=cached,
            epochs=args.cache_epochs,
            **small,
        )
    )
    curves, seconds = {}, {}
    for name, warm in (("cold", {}), ("warm", {"init_run": cached, "text_from": store})):
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        finetune_e2e.run(
            finetune_e2e.FinetuneConfig(
                out=out,
                **demo.tiny_clip_on(data, train_list),
                val_list=val_list,
                frames=args.frames,
                epochs=args.epochs,
                **small,
                workers=0,
                **warm,
            )
        )
        seconds[name] = round(time.perf_counter() - start, 1)
        curves[name] = [line["val_top1"] for line in RunFolder(out).read_history()]
    target = curves["cold"][-1]
    figures = {
        "machine": f"{platform.machine()}, 1 torch thread (the policy for mote-tiny)",
        "classes": len(CLASSES),
        "train_videos": len(train_list.read_text().splitlines()),
        "val_videos": len(val_list.read_text().splitlines()),
        "epochs": args.epochs,
        "cache_run_val_top1": (RunFolder(cached).read_metrics() or {}).get("top1"),
        "cold_final_top1": target,
        "cold_best_top1": max(curves["cold"]),
        "warm_final_top1": curves["warm"][-1],
        "warm_best_top1": max(curves["warm"]),
        "warm_epoch1_top1": curves["warm"][0],
        "cold_first_epoch_at_cold_final": first_reaching(curves["cold"], target),
        "warm_first_epoch_at_cold_final": first_reaching(curves["warm"], target),
        "cold_stays_at_cold_final_from": stays_from(curves["cold"], target),
        "warm_stays_at_cold_final_from": stays_from(curves["warm"], target),
        "seconds": seconds,
        "curves": {k: [round(v, 1) for v in c] for k, c in curves.items()},
    }
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
