"""Benchmark the training step alone (issue 10, not a test): train-temporal's two steps
(``pipeline/train/step.py``: ``train_step`` micro-batch by micro-batch, ``--no-fused``, and the
default ``fused_step``), for mote, transformer and meanpool, on random features (no store).

Reports per arch and step kind: aten operator calls per step (torch profiler, CPU activity; the
figure that does not depend on the machine) and videos/s. The optimiser is AdamW as
train-temporal builds it (``adamw``: the fused kernel on CPU and CUDA) for both steps; the
precision train-temporal's ``--precision auto`` picks (bf16 on GPUs that have it, else fp16 with
a loss scaler; fp32 on the CPU).

    python bench/fused_step.py --dim 512 --batch 192 --micro-batches 3 [--device cuda] \
        [--steps 5] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from benchlib import aten_calls, machine, ops_table, sync

from mote.pipeline.device import resolve_device
from mote.pipeline.temporal.architectures import architecture_names
from mote.pipeline.temporal.fused import adamw
from mote.pipeline.temporal.micro_batches import micro_batch_sizes
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.train.step import (
    LossModule,
    fused_step,
    make_scaler,
    resolve_precision,
    train_step,
)

ARCHS = architecture_names()


def make_step(kind: str, arch: str, args: argparse.Namespace, device: torch.device):
    """A zero-argument callable running one training step of ``kind`` on fixed random data."""
    torch.manual_seed(0)
    cfg = default_config(args.dim, arch=arch)
    model = MoTE(cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    e = torch.randn(args.batch, args.frames, args.dim, generator=g).half().to(device)
    y = torch.randint(args.classes, (args.batch,), generator=g).to(device)
    text = F.normalize(torch.randn(args.classes, args.dim, generator=g), dim=-1).to(device)
    params = [{"params": list(model.parameters()), "lr": 1e-5}]
    precision = resolve_precision("auto", device)
    scaler = make_scaler(precision, device)
    m = len(micro_batch_sizes(args.batch, args.micro_batches))
    gens = [torch.Generator().manual_seed(1 + j) for j in range(m)]
    module = LossModule(model, None, compile=args.compile and kind == "fused")
    opt = adamw(params, device, weight_decay=0.2)
    run = fused_step if kind == "fused" else train_step

    def step():
        return run(
            module, opt, e, y, text, gens, global_size=args.batch, scaler=scaler,
            precision=precision,
        )  # fmt: skip

    return step


def aten_ops_per_step(step, steps: int) -> tuple[float, list[tuple[str, int]]]:
    """aten:: events per step under the profiler (after the warm-up), and the commonest ones."""
    names = aten_calls(lambda: [step() for _ in range(steps)])
    return sum(names.values()) / steps, names.most_common(8)


def videos_per_s(step, steps: int, batch: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--batch", type=int, default=192)
    parser.add_argument("--micro-batches", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="fused: torch.compile on CUDA")
    parser.add_argument("--top", action="store_true", help="print the commonest aten ops")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", action="store_true", help="print the op-count table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for arch in args.archs.split(","):
        for kind in ("plain", "fused"):
            step = make_step(kind, arch, args, device)
            for _ in range(2):  # warm-up (and compilation)
                step()
            ops, top = aten_ops_per_step(step, args.profile_steps)
            vps = videos_per_s(step, args.steps, args.batch, device)
            rows.append(
                {
                    "arch": arch,
                    "step": kind,
                    "aten_ops_per_step": round(ops),
                    "videos_per_s": round(vps, 1),
                }
            )
            print(f"{arch:>12} {kind:>6}: {ops:8.0f} aten ops/step  {vps:10.1f} videos/s")
            if args.top:
                print("              ", top)
    by = {(r["arch"], r["step"]): r for r in rows}
    for arch in args.archs.split(","):
        plain, fused = by[(arch, "plain")], by[(arch, "fused")]
        print(
            f"{arch:>12}: ops cut {plain['aten_ops_per_step'] / fused['aten_ops_per_step']:.1f}x, "
            f"speed-up {fused['videos_per_s'] / plain['videos_per_s']:.2f}x"
        )
    if args.markdown:
        print(ops_table(rows, "plain", "fused"))
    figures = {
        "machine": machine(device),
        "torch": torch.__version__,
        "device": str(device),
        "dim": args.dim,
        "batch": args.batch,
        "micro_batches": args.micro_batches,
        "compile": args.compile,
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
