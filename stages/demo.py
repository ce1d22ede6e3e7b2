"""``mote demo``: the whole pipeline on generated videos of moving shapes with ``mote-tiny``.

The classes differ by motion direction (and shape), so temporal order matters: mean pooling of
frame features cannot tell "moving left" from "moving right", a temporal module can. Everything
runs on the CPU with a randomly initialised tiny CLIP, in about a minute on 2 cores.

The last step fine-tunes CLIP and MoTE end to end (``finetune-e2e``) for a few epochs, warm-started
from the cache run. Its training augmentation (spec 7.2) flips clips left-right; a flipped "moving
left" clip moves right, so the generated data set declares its left/right classes as flip pairs
(``--flip``, spec 8.3's rule for SSv2) and a flipped clip takes its mirror class's label. Its
score is shown beside the cache run's on the same clip (view 0 of the validation store). Two
settings differ from the spec there, both measured (docs/performance.md, "stage three"): crops
keep the whole frame (``--min-crop-area 1``: spec 7.2's crops down to 8% of the frame often cut
the moving shape out of these 64-px clips), and the CLIP tower learns at the spec's share of the
lr (``--clip-lr-ratio`` default), not the cache run's full lr for its logit scale.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from mote.pipeline.clip.factory import TINY_CONFIG
from mote.pipeline.data.synthetic import SyntheticDataset, write_motion_dataset
from mote.pipeline.progress import NullProgress, Progress, Quiet
from mote.pipeline.runs.report_page import millions
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.arch_names import MEANPOOL, MOTE
from mote.pipeline.threads import command_threads, use_threads
from mote.stages import (
    evaluate,
    extract,
    finetune_e2e,
    info,
    predict,
    report,
    train_temporal,
    zeroshot,
)
from mote.stages.configs.demo_config import DemoConfig  # noqa: F401

# What the demo trains and compares: MoTE against CLIP mean pooling.
DEMO_ARCHS = (MOTE, MEANPOOL)
# Classes the demo never trains on: vertical motion, evaluated zero-shot.
HELD_OUT = ("circle moving up", "circle moving down", "square moving up", "square moving down")
# The e2e step's smallest training crop: the shapes fill a small part of 64-px frames, and
# spec 7.2's 8% crops often cut them out (docs/performance.md, "stage three"); 1.0 keeps the
# whole frame (a random S x S crop of its shorter side resized to S, then flip and grayscale).
DEMO_MIN_CROP_AREA = 1.0


def split_list(list_file: Path, every: int = 4) -> tuple[Path, Path]:
    """Every ``every``-th video of each class goes to validation, the rest to training."""
    train, val = [], []
    seen: dict[str, int] = {}
    for line in list_file.read_text().splitlines():
        label = line.rsplit(" ", 1)[1]
        seen[label] = seen.get(label, 0) + 1
        (val if seen[label] % every == 0 else train).append(line)
    train_file, val_file = list_file.with_name("train.txt"), list_file.with_name("val.txt")
    train_file.write_text("\n".join(train) + "\n")
    val_file.write_text("\n".join(val) + "\n")
    return train_file, val_file


def tiny_clip_on(data: SyntheticDataset, list_file: Path) -> dict:
    """Settings for the demo's videos in ``list_file`` and its CLIP: mote-tiny with random
    weights (no download, thousands of images/s on a CPU)."""
    return dict(
        dataset="list", root=data.root, list_file=list_file, labels_file=data.labels_file,
        model="mote-tiny", pretrained="none",
    )  # fmt: skip


def _extract(
    data, list_file: Path, out: Path, views: str, sampling: str, cfg: DemoConfig, progress: Progress
) -> dict:
    return extract.run(
        extract.ExtractConfig(
            out=out,
            **tiny_clip_on(data, list_file),
            frames=8,
            views=views,
            sampling=sampling,
            seed=cfg.seed,
            devices="cpu",
            decode_workers=cfg.decode_workers,
            split=list_file.stem,
            overwrite=True,
        ),
        progress,
    )


def _small_data(cfg: DemoConfig, **settings: object) -> dict:
    """Training settings for the demo's 160 videos, shared by its cache and end-to-end runs
    (the end-to-end run warm-starts from the cache run, so both have its 2 layers): small
    batches so an epoch is several steps, one micro-batch; ``settings`` add to and override
    these."""
    return {
        "layers": 2,
        "batch_size": 32,
        "micro_batches": 1,
        "seed": cfg.seed,
        "device": "cpu",
    } | settings


def _train(arch: str, train: Path, val: Path, out: Path, cfg: DemoConfig, progress) -> dict:
    if out.exists():
        shutil.rmtree(out)
    return train_temporal.run(
        train_temporal.TrainConfig(
            train=train,
            val=val,
            out=out,
            arch=arch,
            # the logit scale (the only CLIP weight of a cache run) at the full lr
            **_small_data(cfg, epochs=cfg.epochs, warmup_epochs=5, lr=1e-3, clip_lr_ratio=1.0),
        ),
        progress,
    )


def _finetune(
    data, train: Path, val: Path, init: Path, store: Path, trained: dict, cfg: DemoConfig
) -> dict:
    """A few epochs of CLIP + MoTE end to end, from the MoTE cache run and the store's text;
    ``trained`` is that run's training result, to compare on the clip e2e validates on."""
    # e2e validates on 1 eval clip (centre crop): view 0 of the 3x1 store is that clip
    start = (trained.get("top1_per_view") or [trained["top1"]])[0]
    out = cfg.workdir / "runs" / "e2e"
    if out.exists():
        shutil.rmtree(out)
    metrics = finetune_e2e.run(
        finetune_e2e.FinetuneConfig(
            out=out,
            **tiny_clip_on(data, train),
            val_list=val,
            frames=8,
            **_small_data(cfg, epochs=cfg.e2e_epochs, warmup_epochs=0, lr=1e-4),
            workers=cfg.decode_workers,
            flip=data.flip.text,
            min_crop_area=DEMO_MIN_CROP_AREA,
            init_run=init,
            text_from=store,
        )
    )
    lines = RunFolder(out).read_history()
    return {
        "run": str(out),
        "init_run": str(init),
        "epochs": cfg.e2e_epochs,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "init_top1_same_clip": start,
        "flip": data.flip.text,
        "min_crop_area": DEMO_MIN_CROP_AREA,
        "n_videos": metrics["n_videos"],
        "val_top1_per_epoch": [line["val_top1"] for line in lines],
        "videos_per_s": [line["videos_per_s"] for line in lines],
    }


@command_threads()
def run(cfg: DemoConfig, progress: Progress | None = None) -> dict:
    """Generate videos, extract them, train MoTE and mean pooling, evaluate both, then label two
    held-out video files with ``mote predict``.

    Steps are reported as plain ``progress.message`` lines; the returned dict holds every
    number the CLI's tables show (``close_set`` and ``zero_shot`` rows).
    """
    progress = progress or NullProgress()
    use_threads("cpu", width=TINY_CONFIG["embed_dim"])  # each command below applies it again
    return _run(cfg, progress)


def _run(cfg: DemoConfig, progress: Progress) -> dict:
    started = time.perf_counter()
    work = cfg.workdir
    say = progress.message
    data, train_list, val_list = _videos(cfg, say)
    say("2/8 extracting mote-tiny CLIP frame features (random weights)")
    train_store, val_store = work / "train.zarr", work / "val.zarr"
    _extract(data, train_list, train_store, "2x1", "train", cfg, progress)
    _extract(data, val_list, val_store, "3x1", "eval", cfg, progress)

    say("3/8 training MoTE and the mean-pooling baseline from the cache")
    runs = {arch: work / "runs" / arch for arch in DEMO_ARCHS}
    trained = {
        arch: _train(arch, train_store, val_store, path, cfg, Quiet(progress))
        for arch, path in runs.items()
    }

    say("4/8 evaluating (3 clips per video, fused)")
    results = {
        arch: evaluate.run(evaluate.EvaluateConfig(run=path, store=val_store, device="cpu"))
        for arch, path in runs.items()
    }

    say(f"5/8 zero-shot on {len(HELD_OUT)} held-out classes")
    zero = _zero_shot(runs, cfg, progress)

    say(f"6/8 report of both runs in {work / 'report'}")
    written = report.run(report.ReportConfig(runs=tuple(runs.values()), out=work / "report"))
    close_set = _close_set(runs, results, written["runs"])
    say("7/8 mote predict: the MoTE run labels two held-out video files")
    labelled = _held_out_videos(data.root, val_list, 2)
    predictions = _predict(runs[MOTE], labelled, cfg, progress)
    e2e = None
    if cfg.e2e_epochs > 0:
        say(
            f"8/8 finetune-e2e: {cfg.e2e_epochs} epochs of CLIP + MoTE end to end on the videos, "
            "warm-started from the MoTE run"
        )
        e2e = _finetune(data, train_list, val_list, runs[MOTE], train_store, trained[MOTE], cfg)
    return {
        "e2e": e2e,
        "predict": predictions,
        "predict_truth": [data.class_names[label] for _, label in labelled],
        "predict_run": str(runs[MOTE]),
        "results": results,
        "trained": trained,
        "zeroshot": zero,
        "close_set": close_set,
        "zero_shot": [
            {"arch": arch, "top1": r["top1_mean"], "n_videos": r["splits"][0]["n_videos"]}
            for arch, r in zero.items()
        ],
        "held_out": list(HELD_OUT),
        "zero_shot_chance": 100.0 / len(HELD_OUT),
        "info": info.run(info.InfoConfig(store=val_store)),
        "store": str(val_store),
        "seconds": time.perf_counter() - started,
        "chance": 100.0 / len(data.class_names),
        "report": written["report"],
    }


def _videos(cfg: DemoConfig, say: Callable[[str], None]) -> tuple[SyntheticDataset, Path, Path]:
    """Step 1: the generated videos and their training and validation lists (3:1 per class)."""
    say(f"1/8 writing demo videos to {cfg.workdir / 'videos'}")
    data = write_motion_dataset(
        cfg.workdir / "videos", videos_per_class=cfg.videos_per_class, seed=cfg.seed
    )
    train_list, val_list = split_list(data.list_file)
    say(f"    {len(data.class_names)} classes: {', '.join(data.class_names)}")
    return data, train_list, val_list


def _zero_shot(runs: dict[str, Path], cfg: DemoConfig, progress: Progress) -> dict[str, dict]:
    """Each run's zero-shot result on generated videos of classes it never saw."""
    work = cfg.workdir
    unseen = write_motion_dataset(
        work / "heldout",
        classes=HELD_OUT,
        videos_per_class=max(2, cfg.videos_per_class // 3),
        seed=cfg.seed + 1,
    )
    unseen_store = work / "heldout.zarr"
    _extract(unseen, unseen.list_file, unseen_store, "3x1", "eval", cfg, progress)
    return {
        arch: zeroshot.run(
            zeroshot.ZeroShotConfig(
                run=path,
                dataset="list",
                stores=(unseen_store,),
                device="cpu",
                splits=(f"{unseen.list_file}:{unseen.labels_file}",),
            )
        )
        for arch, path in runs.items()
    }


def _close_set(runs: dict[str, Path], results: dict[str, dict], report_runs: list[dict]) -> list:
    """The close-set table's rows; the params column is the report's (the same number, the same
    text: the run's params_merged)."""
    params = {row["path"]: millions(row["params_merged"]) for row in report_runs}
    return [
        {
            "arch": arch,
            "top1": result["top1"],
            "top5": result["top5"],
            "n_videos": result["n_videos"],
            "views": result["views"],
            "params_m_merged": params[str(runs[arch])],
        }
        for arch, result in results.items()
    ]


def _predict(run: Path, labelled: list[tuple[Path, int]], cfg: DemoConfig, progress: Progress):
    """``mote predict`` of the MoTE run on held-out video files."""
    return predict.run(
        predict.PredictConfig(
            run=run,
            videos=tuple(path for path, _ in labelled),
            top_k=3,
            device="cpu",
            decode_workers=cfg.decode_workers,
        ),
        progress,
    )


def _held_out_videos(root: Path, val_list: Path, n: int) -> list[tuple[Path, int]]:
    """(path, label) of the first held-out video of ``n`` classes (the validation list's order)."""
    videos: dict[int, Path] = {}
    for line in val_list.read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        videos.setdefault(int(label), root / path)
    return [(path, label) for label, path in list(videos.items())[:n]]
