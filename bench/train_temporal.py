"""Benchmark stage two (not a test): what one `mote train-temporal` epoch costs per arch and
step kind, what a run costs outside its epochs, and whether training is data-bound.

Sections (--sections, comma-separated; default "epochs,fixed"):

  epochs  For mote, transformer and meanpool, with the fused step (the default) and the plain
          per-micro-batch step (--no-fused): a whole train-temporal epoch (the shared Trainer's
          train_epoch over the command's FeatureBatches, after the warm-up epochs) on a store of
          --epoch-videos D-wide videos at the spec batch (192 for D=512). Reports
            aten operator calls per step: the torch profiler over one whole epoch, divided by
              its steps (machine-independent; target: cut >= 5x for mote), and
            videos/s: a second, unprofiled epoch (GPU targets for mote B/16 >= 20,000, L/14
              >= 10,000, transformer >= 30,000 videos/s),
          the plain/fused ratios, and what a 240k-video, 30-epoch mote run costs at that rate.
  fixed   `python -m mote.stages train-temporal` as a subprocess on a --fixed-videos store
          (train = val) with --epochs 1 and --epochs 2: per-epoch = T2 - T1, fixed cost outside
          the epochs = T1 - per-epoch (target <= 5 s + the store load on a GPU machine); then an
          in-process breakdown: imports, store load, model build, per-epoch validation, final
          evaluation, curves.png.
  data    (a) steps/s fed from the store, (b) on tensors already on the device, data overhead
          1 - a/b (target <= 10%); (c) an epoch from the cache vs with the CLIP encoder running
          (target >= 50x). Its store is --videos wide.

    python bench/train_temporal.py                      # CPU: small sizes, a few minutes
    python bench/train_temporal.py --device cuda --epoch-videos 20000 --fixed-arch mote
    python bench/train_temporal.py --sections data --videos 20000 --dim 512 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import aten_calls, doc_parser, machine, ops_table, sync, write_store

from mote.pipeline.clip.build import build_clip
from mote.pipeline.device import resolve_device
from mote.pipeline.temporal.architectures import architecture_names
from mote.pipeline.temporal.features import InMemoryFeatures, StreamingFeatures
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.feature_batches import FeatureBatches
from mote.pipeline.train.loop import Trainer
from mote.pipeline.train.schedule import spec_optimizer
from mote.pipeline.train.step import LossModule, train_step
from mote.pipeline.train.train_settings import resolve
from mote.stages.train_temporal import (
    TrainConfig,
    _val_top1,
    final_metrics,
    model_config,
)

CLIP_FOR_DIM = {512: "ViT-B-16", 768: "ViT-L-14", 64: "mote-tiny"}
ARCHS = architecture_names()
K400 = (240_000, 30)  # videos, epochs of the run whose cost the epochs section reports
# videos/s targets on one H100/H200 (issue 10), by (arch, dim)
GPU_TARGETS = {("mote", 512): 20_000, ("mote", 768): 10_000, ("transformer", 512): 30_000}


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
        train_step(
            losses,
            optimizer,
            e,
            y,
            text,
            generators,
            global_size=len(y),
            scaler=scaler,
            precision=precision,
        )
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


def data_section(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    """(a), (a'), (b) and (c): is the step fed fast enough, and what the cache saves."""
    store_path = work / "data.zarr"
    start = time.perf_counter()
    store = write_store(store_path, args.videos, args.dim, args.frames, args.classes)
    write_s = time.perf_counter() - start
    cfg = resolve(TrainConfig(train=store_path, out=work / "run"), args.dim)
    torch.manual_seed(0)
    model = MoTE(model_config(cfg, args.dim)).to(device)
    text = torch.from_numpy(np.array(store.text_embeddings)).to(device)
    model.set_finetune_text(text)
    optimizer = spec_optimizer(cfg, model)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"]

    start = time.perf_counter()
    memory_source = InMemoryFeatures(store)
    load_s = time.perf_counter() - start

    def steps_per_s(batches) -> float:
        return timed_steps(model, optimizer, batches, text, cfg, device, args.steps)

    a = steps_per_s(from_store(memory_source, cfg.batch_size, device))
    a_stream = steps_per_s(from_store(StreamingFeatures(store, 16), cfg.batch_size, device))
    features = torch.from_numpy(memory_source.embeddings[:, 0]).to(device)
    labels = torch.from_numpy(memory_source.labels).to(device)
    b = steps_per_s(from_memory(features, labels, cfg.batch_size))
    epoch_s = math.ceil(args.videos / cfg.batch_size) / a
    encoder, images_s = encoder_images_per_s(
        args.dim, device, args.encoder_batch or (256 if device.type == "cuda" else 8)
    )
    encode_epoch_s = args.videos * args.frames / images_s
    figures = {
        "videos": args.videos,
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
    return figures


# ------------------------------------------------------------------------------ epochs


def epoch_runner(arch: str, fused: bool, store, store_path: Path, args, device: torch.device):
    """train-temporal's own pieces for one arch and step kind: a callable running one epoch."""
    cfg = resolve(
        TrainConfig(
            train=store_path,
            out=store_path.parent / "run",
            arch=arch,
            fused=fused,
            compile=args.compile and fused,
        ),
        args.dim,
    )
    torch.manual_seed(0)
    model = MoTE(model_config(cfg, args.dim)).to(device)
    text = torch.from_numpy(np.array(store.text_embeddings)).float().to(device)
    model.set_finetune_text(text)
    text = torch.nn.functional.normalize(text, dim=-1)
    ctx = DistContext.from_env(str(device))
    trainer = Trainer(cfg, ctx, model, spec_optimizer(cfg, model))
    data = FeatureBatches(InMemoryFeatures(store), cfg.batch_size, cfg.micro_batches, ctx, 0)
    epoch = int(math.ceil(cfg.warmup_epochs))  # past the warm-up: the lr is not 0

    def run_epoch() -> dict:
        stats = trainer.train_epoch(data, text, epoch)  # ends with one host read of the sums
        sync(device)
        return stats

    return run_epoch, len(data), trainer.fused


def epochs_section(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    """aten calls per step (one profiled epoch) and videos/s (one more epoch) per arch/step."""
    store_path = work / "epochs.zarr"
    store = write_store(store_path, args.epoch_videos, args.dim, args.frames, args.classes)
    rows = []
    for arch in args.archs.split(","):
        for kind in ("plain", "fused"):
            run_epoch, steps, fused = epoch_runner(
                arch, kind == "fused", store, store_path, args, device
            )
            if device.type == "cuda":
                run_epoch()  # warm-up: allocator, cuBLAS handles, compilation
            calls = aten_calls(run_epoch)
            start = time.perf_counter()
            stats = run_epoch()
            seconds = time.perf_counter() - start
            row = {
                "arch": arch,
                "step": kind if fused == (kind == "fused") else f"{kind} (not fusable)",
                "steps_per_epoch": steps,
                "aten_ops_per_step": round(sum(calls.values()) / steps),
                "videos_per_s": round(stats["videos"] / seconds, 1),
                "top_ops": calls.most_common(6),
            }
            rows.append(row)
            print(
                f"{arch:>12} {kind:>6}: {row['aten_ops_per_step']:8d} aten ops/step "
                f"{row['videos_per_s']:10.1f} videos/s ({steps} steps/epoch)",
                flush=True,
            )
    by = {(r["arch"], r["step"]): r for r in rows}
    ratios = {}
    videos, epochs = K400
    for arch in args.archs.split(","):
        plain, fused = by.get((arch, "plain")), by.get((arch, "fused"))
        if plain is None or fused is None:
            continue
        cut = plain["aten_ops_per_step"] / fused["aten_ops_per_step"]
        speed = fused["videos_per_s"] / plain["videos_per_s"]
        run_h = videos * epochs / fused["videos_per_s"] / 3600
        ratios[arch] = {
            "ops_cut": round(cut, 2),
            "speedup": round(speed, 2),
            "k400_30_epochs_hours_fused": round(run_h, 2),
        }
        line = f"{arch:>12}: ops cut {cut:.1f}x, speed-up {speed:.2f}x, "
        line += f"{videos:,} videos x {epochs} epochs at the fused rate: {run_h:.2f} h"
        target = GPU_TARGETS.get((arch, args.dim))
        if target and device.type == "cuda":
            line += f"; videos/s target >= {target}: {verdict(fused['videos_per_s'], '>=', target)}"
        print(line)
    if "mote" in ratios:
        print(f"target mote ops cut >= 5x: {verdict(ratios['mote']['ops_cut'], '>=', 5)}")
    if args.markdown:
        print(ops_table(rows, "`--no-fused`", "fused (default)"))
    return {"epoch_videos": args.epoch_videos, "compile": args.compile, "rows": rows, **ratios}


# ------------------------------------------------------------------------------ fixed cost


def cli_seconds(store_path: Path, out: Path, epochs: int, args, device: torch.device) -> float:
    """Wall-clock seconds of one `mote train-temporal` process, imports included."""
    command = [sys.executable, "-m", "mote.stages", "train-temporal"]
    command += ["--train", str(store_path), "--val", str(store_path), "--out", str(out)]
    command += ["--epochs", str(epochs), "--arch", args.fixed_arch, "--device", str(device)]
    command += ["--json"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def fixed_section(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    """A run's cost outside its epochs, whole (two CLI runs) and by part (in process)."""
    store_path = work / "fixed.zarr"
    store = write_store(store_path, args.fixed_videos, args.dim, args.frames, args.classes)
    one = cli_seconds(store_path, work / "fixed1", 1, args, device)
    two = cli_seconds(store_path, work / "fixed2", 2, args, device)
    per_epoch = two - one
    figures = {
        "fixed_videos": args.fixed_videos,
        "fixed_arch": args.fixed_arch,
        "cli_1_epoch_s": round(one, 2),
        "cli_2_epochs_s": round(two, 2),
        "per_epoch_s": round(per_epoch, 2),
        "fixed_s": round(one - per_epoch, 2),
    }
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mote.stages.cli, mote.stages.train_temporal"])
    figures["part_imports_s"] = round(time.perf_counter() - start, 2)

    def timed(key: str, fn):
        sync(device)
        start = time.perf_counter()
        value = fn()
        sync(device)
        figures[key] = round(time.perf_counter() - start, 3)
        return value

    features = timed("part_store_load_s", lambda: InMemoryFeatures(store))
    cfg = resolve(
        TrainConfig(train=store_path, val=store_path, out=work / "x", arch=args.fixed_arch),
        args.dim,
    )
    model = timed("part_model_build_s", lambda: MoTE(model_config(cfg, args.dim)).to(device))
    text = torch.from_numpy(np.array(store.text_embeddings)).float().to(device)
    model.set_finetune_text(text)
    text = torch.nn.functional.normalize(text, dim=-1)
    timed("part_validation_s", lambda: _val_top1(model, features, text, device))
    timed(
        "part_final_evaluation_s", lambda: final_metrics(model, store, features, text, cfg, device)
    )
    from mote.pipeline.runs.run_folder import RunFolder

    folder = RunFolder(work / "fixed1")
    timed("part_curves_png_s", lambda: folder.write_curves(out=work / "curves.png"))
    for key, value in figures.items():
        print(f"{key:>32}: {value}")
    return figures


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sections", default="epochs,fixed", help="epochs, fixed, data")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--dim", type=int, default=512, help="feature width (512 B/16, 768 L/14)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--archs", default=",".join(ARCHS), help="epochs: archs to run")
    parser.add_argument(
        "--epoch-videos",
        type=int,
        default=576,
        help="epochs: store size (576 = 3 steps at batch 192; the issue's figure: 20000)",
    )
    parser.add_argument("--compile", action="store_true", help="epochs: --compile (CUDA)")
    parser.add_argument("--markdown", action="store_true", help="epochs: print the op-count table")
    parser.add_argument(
        "--fixed-videos", type=int, default=20000, help="fixed: store size (train = val)"
    )
    parser.add_argument(
        "--fixed-arch",
        default="meanpool",
        help="fixed: arch of the CLI runs (meanpool keeps a CPU epoch short; mote on a GPU)",
    )
    parser.add_argument("--videos", type=int, default=20000, help="data: store size")
    parser.add_argument("--steps", type=int, default=20, help="data: timed steps per figure")
    parser.add_argument("--encoder-batch", type=int, default=None, help="data: CLIP batch")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are written")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = {"machine": machine(device), "torch": torch.__version__, "device": str(device)}
    figures["dim"] = args.dim
    print(f"{figures['machine']}; torch {torch.__version__}; device {device}; D={args.dim}")
    sections = {"epochs": epochs_section, "fixed": fixed_section, "data": data_section}
    for name in args.sections.split(","):
        print(f"--- {name}", flush=True)
        figures[name] = sections[name](args, device, work)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
