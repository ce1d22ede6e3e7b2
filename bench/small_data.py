"""Do mote's training defaults learn on a small store (not a test)? On generated motion videos
extracted by mote-tiny, split 3:1 per class (`demo.split_list`): `train-temporal` with the spec's
settings for B/16 (train_settings' SPEC_DEFAULTS and SPEC_LR, made for K400's ~1,250 steps per
epoch) and with no training flag at all (the small-store rule of pipeline/train/train_settings.py),
for several store sizes, class counts and architectures. Prints one row per run: final val top-1
(1 view) and chance.

    python bench/small_data.py --sets 10x4 20x4 12x8 40x8 --archs mote transformer
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from mote.pipeline.data.synthetic import MOTION_CLASSES, write_motion_dataset
from mote.pipeline.train.train_settings import SPEC_DEFAULTS, SPEC_LR
from mote.stages import demo, extract, train_temporal

SPEC_EPOCHS, SPEC_BATCH, _ = SPEC_DEFAULTS[512]  # B/16's: what the spec trains K400 with
SPEC = {"batch_size": SPEC_BATCH, "epochs": SPEC_EPOCHS, "lr": SPEC_LR}


def stores(work: Path, videos_per_class: int, classes: int) -> tuple[Path, Path, int]:
    """Train and val stores of a generated motion set; returns them and the train size."""
    data = write_motion_dataset(work / "videos", MOTION_CLASSES[:classes], videos_per_class, seed=3)
    train_list, val_list = demo.split_list(data.list_file)
    for out, videos in ((work / "train.zarr", train_list), (work / "val.zarr", val_list)):
        extract.run(
            extract.ExtractConfig(
                out=out, **demo.tiny_clip_on(data, videos), devices="cpu", decode_workers=0
            )
        )
    return work / "train.zarr", work / "val.zarr", len(train_list.read_text().splitlines())


def train(train_store: Path, val_store: Path, out: Path, **settings) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cfg = train_temporal.TrainConfig(
        train=train_store, val=val_store, out=out, device="cpu", **settings
    )
    metrics = train_temporal.run(cfg)
    saved = json.loads((out / "config.json").read_text())["train"]
    return {
        "top1": metrics["top1"],
        "batch": saved["batch_size"],
        "epochs": saved["epochs"],
        "lr": saved["lr"],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["10x4", "20x4", "12x8", "40x8"],
                        help="VIDEOS_PER_CLASSxCLASSES, 3/4 of them train")  # fmt: skip
    parser.add_argument("--archs", nargs="+", default=["mote", "transformer"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args()
    torch.set_num_threads(1)  # mote-tiny's ops are tiny: threads only add overhead
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-small-"))
    rows = []
    print("| set | train videos | classes | arch | settings | batch | epochs | lr | val top-1 "
          "| chance | s |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name in args.sets:
        per_class, classes = (int(n) for n in name.split("x"))
        train_store, val_store, n_train = stores(work / name, per_class, classes)
        for arch in args.archs:
            for label, settings in (("spec", SPEC), ("mote defaults", {})):
                row = train(train_store, val_store, work / name / "run", arch=arch, **settings)
                row.update(set=name, train_videos=n_train, classes=classes, arch=arch)
                row.update(settings=label, chance=100 / classes)
                rows.append(row)
                print(
                    f"| {name} | {n_train} | {classes} | {arch} | {label} | {row['batch']} | "
                    f"{row['epochs']} | {row['lr']:g} | {row['top1']:.1f} | {row['chance']:.1f} "
                    f"| {row['seconds']:.0f} |",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}))


if __name__ == "__main__":
    main()
