"""Benchmark stage three (not a test): is `mote finetune-e2e` bound by decoding or by the step,
does it reach that limit, and how much faster is training from the cache?

In one run, on the same videos and the same model:
  (a) decode + sample (spec 7.1) + augment (spec 7.2) videos/s with W DataLoader workers
      (ClipDataset + make_loader, no model); the clips are uint8, and the bytes per clip that
      cross the worker pipe are reported beside what float32 clips took
  (b) training steps videos/s on clips already in memory (the shared Trainer, EndToEnd model,
      the uint8 clips of (a) on the device, normalised there by the model)
  (c) the full `mote finetune-e2e` command's videos/s, from its run's history (epochs after the
      first, whose time includes the workers' start-up)
  (d) `mote train-temporal` videos/s on a store of the same videos (extracted once with the same
      model), from its run's history
Targets: (c) >= 0.85 x min(a, b) on a GPU, (c) >= 0.85 x 1/(1/a + 1/b) when decoding and the
step share the CPU cores; (d)/(c) is what the cache saves per epoch. On CUDA also the peak GPU
memory of a training step for ViT-B/16 at batch 64 and ViT-L/14 at batch 48 with gradient
checkpointing (random weights, no download).

    python bench/finetune_e2e.py --videos 48 --workers 2 --epochs 3          # CPU, mote-tiny
    python bench/finetune_e2e.py --model ViT-B-16 --device cuda --videos 512 --batch 64 \
        --workers 12                                                          # a GPU machine
    python bench/finetune_e2e.py --root DIR --list LIST --labels CSV ...      # real videos
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# the other stage benchmarks beside this file: their dataset, extract and verdict helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import cli_extract, machine_description, make_dataset, verdict  # noqa: E402

from mote.pipeline.config import default_encoder_batch  # noqa: E402
from mote.pipeline.data.datasets import load_dataset  # noqa: E402
from mote.pipeline.device import resolve_device  # noqa: E402
from mote.pipeline.temporal.e2e import build_end_to_end  # noqa: E402
from mote.pipeline.threads import set_threads, use_threads  # noqa: E402
from mote.pipeline.train.clip_batches import FrameFeatures  # noqa: E402
from mote.pipeline.train.distributed import DistContext  # noqa: E402
from mote.pipeline.train.loop import StepBatch, Trainer  # noqa: E402
from mote.pipeline.train.schedule import build_optimizer, mote_groups  # noqa: E402
from mote.pipeline.train.train_settings import resolve  # noqa: E402
from mote.pipeline.video.clips import ClipDataset, make_loader  # noqa: E402
from mote.stages.finetune_e2e import (  # noqa: E402
    CHECKPOINTED_WIDTH,
    FinetuneConfig,
    model_config,
)

MEMORY_CASES = (("ViT-B-16", 64, False), ("ViT-L-14", 48, True))  # model, batch, checkpointing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def decode_rate(dataset: ClipDataset, batch: int, workers: int, pin: bool) -> tuple[float, list]:
    """(a): one untimed epoch starts the persistent workers, the next is timed; returns its
    videos/s and its batches (the uint8 clips (b) trains on)."""
    loader = make_loader(dataset, batch_size=batch, workers=workers, pin_memory=pin, seed=0)
    loader.set_epoch(0)
    for _ in loader:
        pass
    loader.set_epoch(1)
    start = time.perf_counter()
    batches = [(b.frames, b.labels) for b in loader]
    seconds = time.perf_counter() - start
    del loader  # ends the workers
    return sum(len(y) for _, y in batches) / seconds, batches


class InMemoryClips:
    """The loop's EpochData over batches already decoded (and on the device)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return (StepBatch(clips, labels, len(labels)) for clips, labels in self.batches)


def build_trainer(cfg: FinetuneConfig, class_names, device: torch.device):
    """The model, trainer and text bank `finetune-e2e` builds for these settings."""
    model = build_end_to_end(
        cfg.model,
        cfg.pretrained,
        class_names,
        device=device,
        seed=cfg.seed,
        config=lambda dim: model_config(cfg, dim),
    )
    cfg = resolve(cfg, model.clip.dim)
    checkpointing = cfg.grad_checkpointing
    model.set_grad_checkpointing(
        model.clip.dim == CHECKPOINTED_WIDTH if checkpointing is None else checkpointing
    )
    optimizer = build_optimizer(
        mote_groups(model.temporal, cfg.lr, cfg.clip_lr_ratio, visual=model.visual),
        cfg.weight_decay,
    )
    ctx = DistContext(device=device)
    trainer = Trainer(cfg, ctx, model.temporal, optimizer, features_of=FrameFeatures(model))
    return model, trainer


def step_rate(model, trainer, batches: list, device, epochs: int) -> float:
    """(b): the Trainer's epochs on the clips of (a), on the device; one warm-up epoch."""
    on_device = InMemoryClips([(x.to(device), y.to(device)) for x, y in batches])
    trainer.train_epoch(on_device, model.class_text, 0)
    sync(device)
    start = time.perf_counter()
    text = model.class_text
    videos = sum(trainer.train_epoch(on_device, text, e)["videos"] for e in range(1, epochs))
    sync(device)
    return videos / (time.perf_counter() - start)


def peak_memory_gib(model_name: str, batch: int, checkpointing: bool, frames: int, device) -> float:
    """Peak CUDA memory of two fp16 training steps (batch videos x frames, 400 classes)."""
    cfg = FinetuneConfig(
        dataset="list",
        out=Path("unused"),
        model=model_name,
        pretrained="none",
        frames=frames,
        epochs=1,
        batch_size=batch,
        micro_batches=1,
        grad_checkpointing=checkpointing,
    )
    classes = [f"class {i}" for i in range(400)]
    model, trainer = build_trainer(cfg, classes, device)
    size = model.preprocess.size
    shape = (batch, frames, size, size, 3)  # uint8, as the clip loader gives them
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    torch.cuda.reset_peak_memory_stats(device)
    trainer.train_epoch(InMemoryClips([(clips, labels)] * 2), model.class_text, 0)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    del model, trainer, clips
    torch.cuda.empty_cache()
    return peak


def clip_pipe_bytes(batches: list) -> dict:
    """Bytes of one clip through the worker pipe: the loader's (uint8) and float32's (before
    clips were normalised on the device), and their ratio."""
    clip = next(frames[0] for frames, _ in batches if len(frames))
    sent = clip.numel() * clip.element_size()
    float32 = clip.numel() * torch.finfo(torch.float32).bits // 8
    return {
        "worker_clip_dtype": str(clip.dtype).removeprefix("torch."),
        "worker_bytes_per_clip": sent,
        "worker_bytes_per_clip_float32": float32,
        "worker_bytes_float32_over_sent": round(float32 / sent, 2),
    }


def history_rate(run: Path) -> tuple[float, float]:
    """videos/s of a run from its history: epochs after the first (all when only one), and all."""
    lines = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    later = lines[1:] or lines
    rate = sum(h["videos"] for h in later) / sum(h["seconds"] for h in later)
    return rate, sum(h["videos"] for h in lines) / sum(h["seconds"] for h in lines)


def mote(*args: str, threads: int | None = None) -> tuple[dict, float]:
    """A mote command in a fresh process (this Python's mote); its --json result and wall s.
    ``threads`` sets its torch threads (OMP_NUM_THREADS), else mote's thread policy does."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mote.stages", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mote {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=48, help="Generated videos (or list limit).")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decode workers W.")
    parser.add_argument("--model", default="mote-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=8, help="Frames per clip T.")
    parser.add_argument("--batch", type=int, default=16, help="Videos per step.")
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of (b) and (c).")
    parser.add_argument(
        "--temporal-epochs", type=int, default=10, help="Epochs of (d) (short, noisy epochs)."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads here and in (c), (d) (default: mote's policy, pipeline/threads.py).",
    )
    parser.add_argument("--video-frames", type=int, default=64)
    parser.add_argument("--video-size", default="320x240")
    parser.add_argument("--root", type=Path, default=None, help="Real videos: their folder.")
    parser.add_argument("--list", type=Path, default=None, help="Real videos: 'path label' list.")
    parser.add_argument("--labels", type=Path, default=None, help="Real videos: label CSV.")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-memory", action="store_true", help="Skip the peak-memory cases.")
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="Recompute CLIP blocks in backward in (b) and (c) (default: the command's rule).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.list is not None:
        root, list_file, labels_file = args.root or args.list.parent, args.list, args.labels
    else:
        width, height = (int(x) for x in args.video_size.split("x"))
        data = make_dataset(work / "videos", args.videos, args.video_frames, (width, height))
        root, list_file, labels_file = data.root, data.list_file, data.labels_file
    spec = load_dataset("list", "custom", list_file, labels_file)
    items = spec.items[: args.videos]
    subset = work / "bench_list.txt"  # the same N videos for every figure
    subset.write_text("".join(f"{item.video_id} {item.label}\n" for item in items))

    cfg = FinetuneConfig(
        dataset="list",
        out=work / "e2e_run",
        root=root,
        list_file=subset,
        labels_file=labels_file,
        model=args.model,
        pretrained=args.pretrained,
        frames=args.frames,
        epochs=args.epochs,
        warmup_epochs=0.0,
        batch_size=args.batch,
        micro_batches=args.micro_batches,
        device=str(device),
        workers=args.workers,
        grad_checkpointing=True if args.grad_checkpointing else None,
    )
    # (a) and (b) in this process, with the model the command builds; the clips of (a) feed (b)
    model, trainer = build_trainer(cfg, spec.class_names, device)
    if args.threads is None:  # the command's count (it applies the policy in (c) too)
        use_threads(device, width=model.clip.dim, workers=args.workers)
    clips = ClipDataset(items, root, model.preprocess, args.frames, "train", seed=0)
    a, batches = decode_rate(clips, args.batch, args.workers, device.type == "cuda")
    clip_bytes = clip_pipe_bytes(batches)
    b = step_rate(model, trainer, batches, device, max(2, args.epochs))
    b_peak_gib = (
        round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    )
    del batches, model, trainer

    # (c) the command, in its own process
    common = ["--device", str(device), "--warmup-epochs", "0", "--batch-size", str(args.batch)]
    common += ["--micro-batches", str(args.micro_batches)]
    run_c, run_d = work / "e2e_run", work / "temporal_run"
    for run in (run_c, run_d):
        shutil.rmtree(run, ignore_errors=True)
    e2e_args = ["finetune-e2e", "--dataset", "list", "--root", str(root), "--list", str(subset)]
    e2e_args += ["--labels", str(labels_file), "--out", str(run_c), "--frames", str(args.frames)]
    e2e_args += ["--workers", str(args.workers), "--model", args.model]
    e2e_args += ["--pretrained", args.pretrained, "--epochs", str(args.epochs), *common]
    e2e_args += ["--grad-checkpointing"] if args.grad_checkpointing else []
    _, c_wall_s = mote(*e2e_args, threads=args.threads)
    c, c_all = history_rate(run_c)
    c_config = json.loads((run_c / "config.json").read_text())
    c_precision = c_config.get("precision")
    c_checkpointing = c_config["train"].get("grad_checkpointing")

    # (d) extract once with the same model, then train-temporal on the store
    store = work / "store.zarr"
    settings = dict(
        dataset="list",
        root=str(root),
        list_file=str(subset),
        labels_file=str(labels_file),
        model=args.model,
        pretrained=args.pretrained,
        devices=str(device),
        frames=args.frames,
        decode_workers=args.workers,
        batch_size=default_encoder_batch(device),
    )
    extract_vps, _, _ = cli_extract(settings, store, len(items))
    temporal = ["--train", str(store), "--out", str(run_d), "--epochs", str(args.temporal_epochs)]
    mote("train-temporal", *temporal, *common, threads=args.threads)
    d, _ = history_rate(run_d)

    gpu = device.type == "cuda"
    limit = min(a, b) if gpu else 1 / (1 / a + 1 / b)
    memory = {}
    for name, batch, checkpointing in MEMORY_CASES:
        key = f"peak_gib_{name}_batch{batch}" + ("_checkpointing" if checkpointing else "")
        memory[key] = (
            round(peak_memory_gib(name, batch, checkpointing, args.frames, device), 2)
            if gpu and not args.no_memory
            else None
        )
    figures = {
        "machine": machine_description([device]),
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "device": str(device),
        "videos": len(items),
        "video": "list " + str(list_file)
        if args.list
        else f"{args.video_frames} frames {args.video_size}",
        "frames": args.frames,
        "batch": args.batch,
        "micro_batches": args.micro_batches,
        "workers": args.workers,
        "epochs": args.epochs,
        "temporal_epochs": args.temporal_epochs,
        "a_decode_augment_vps": round(a, 2),
        **clip_bytes,
        "b_train_steps_vps": round(b, 2),
        "c_finetune_e2e_vps": round(c, 2),
        "c_finetune_e2e_vps_all_epochs": round(c_all, 2),
        "c_finetune_e2e_wall_s": round(c_wall_s, 1),
        "c_precision": c_precision,
        "c_grad_checkpointing": c_checkpointing,
        "b_peak_gib": b_peak_gib,
        "d_train_temporal_vps": round(d, 2),
        "extract_vps": round(extract_vps, 2),
        "limit_vps": round(limit, 2),
        "limit_rule": "min(a, b)" if gpu else "1/(1/a + 1/b)",
        "c_over_limit": round(c / limit, 3),
        "d_over_c": round(d / c, 1),
        **memory,
    }
    for key, value in figures.items():
        print(f"{key:>44}: {'skipped' if value is None else value}")
    c_target = figures["c_over_limit"]
    print(f"target c_over_limit >= 0.85: {c_target} -> {verdict(c_target, '>=', 0.85)}")
    print(f"cache speed-up (d)/(c): {figures['d_over_c']}x (reported, no target)")
    print(
        f"worker pipe: {clip_bytes['worker_bytes_per_clip']} bytes per "
        f"{clip_bytes['worker_clip_dtype']} clip, {clip_bytes['worker_bytes_per_clip_float32']} "
        f"as float32 ({clip_bytes['worker_bytes_float32_over_sent']}x)"
    )
    for key in memory:
        print(f"{key}: {'skipped (not CUDA)' if memory[key] is None else memory[key]}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
