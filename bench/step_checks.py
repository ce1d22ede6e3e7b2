"""Checks of the train-temporal step that a GPU must confirm (not a test; bench/gpu_check.sh runs
them, and on the CPU with tiny sizes so they cannot rot).

  sync     A warm-up epoch, then an epoch and a validation under the DeviceWaits probe of the
           tests (any host read of a device tensor, or a device tensor built from Python data)
           and, on CUDA, ``torch.cuda.set_sync_debug_mode("error")``: any synchronisation
           inside a step or a validation batch fails the check.
  graphed  Eager vs compiled (``--compile``: CUDA graphs on CUDA, aot_eager elsewhere) from the
           same weights and draws: per-epoch losses and final weights must agree within the
           precision's noise (auto's bf16 or fp16 on CUDA), then videos/s of each over a timed
           epoch; the compiled losses must run as one graph per batch shape (no graph break).
  profile  One epoch (20 steps with gpu_check's store of 20 batches): host ms per step (the time
           to dispatch it; nothing in a step waits for the device) against GPU ms per step
           (kernel time under the CUDA profiler). Host > GPU means the GPU waits for Python.
           On the CPU the same code path runs under the CPU profiler: GPU n/a.

    python bench/step_checks.py sync --device cuda --dim 512 --videos 20000
    python bench/step_checks.py graphed --device cuda --dim 512 --videos 20000
    python bench/step_checks.py profile --device cuda --dim 512 --videos 3840

The last line is ``SUMMARY <check> ok|FAIL <figures>``, which gpu_check.sh's table shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from benchlib import sync, write_store  # noqa: E402
from device_waits import DeviceWaits, optimizer_tensors  # noqa: E402

from mote.cache_schema.feature_store import FeatureStore  # noqa: E402
from mote.cache_schema.folder import is_store  # noqa: E402
from mote.pipeline.device import tf32_matmuls  # noqa: E402
from mote.pipeline.temporal.features import InMemoryFeatures  # noqa: E402
from mote.pipeline.temporal.mote_model import MoTE  # noqa: E402
from mote.pipeline.train.distributed import DistContext  # noqa: E402
from mote.pipeline.train.feature_batches import FeatureBatches, ValidationView  # noqa: E402
from mote.pipeline.train.loop import Trainer  # noqa: E402
from mote.pipeline.train.schedule import spec_optimizer  # noqa: E402
from mote.pipeline.train.train_settings import resolve  # noqa: E402
from mote.stages.train_temporal import (  # noqa: E402
    TrainConfig,
    _val_top1,
    model_config,
)


def build(store_path: Path, args: argparse.Namespace, compile: bool):
    """train-temporal's trainer, data and text on a store, seeded identically every call."""
    store = FeatureStore.open(store_path)
    ctx = DistContext.from_env(args.device)
    cfg = resolve(
        TrainConfig(train=store_path, out=Path("unused"), batch_size=args.batch, compile=compile),
        args.dim,
    )
    torch.manual_seed(0)
    model = MoTE(model_config(cfg, args.dim)).to(ctx.device)
    text = torch.from_numpy(np.array(store.text_embeddings)).float().to(ctx.device)
    model.set_finetune_text(text)
    text = torch.nn.functional.normalize(text, dim=-1)
    trainer = Trainer(cfg, ctx, model, spec_optimizer(cfg, model))
    features = InMemoryFeatures(store)
    data = FeatureBatches(features, cfg.batch_size, cfg.micro_batches, ctx, 0)
    return trainer, data, text, features


def check_sync(store_path: Path, args: argparse.Namespace) -> tuple[bool, str]:
    trainer, data, text, features = build(store_path, args, compile=False)
    device = trainer.ctx.device
    trainer.train_epoch(data, text, 5)  # warm-up: optimiser state, cached layouts
    view = ValidationView(features, 0, device, float("inf"))
    _val_top1(trainer.head, view, text, device)
    sync(device)
    tensors = [*trainer.losses.parameters(), *trainer.losses.buffers(), text]
    tensors += optimizer_tensors(trainer.optimizer) + [data.resident.features, data.resident.labels]
    if trainer.scaler is not None:
        tensors += [trainer.scaler._scale, trainer.scaler._growth_tracker]
    tensors += [view.resident.features, view.resident.labels]
    raised = ""
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        with DeviceWaits(tensors) as steps:
            trainer.module.train()
            totals = trainer.run_steps(data, text, 6)
        with DeviceWaits(tensors) as validation:
            trainer.head.eval()
            correct = 0
            for block, labels in view.blocks(4096):
                logits, _ = trainer.head.predict(block.float(), text, tfm=False)
                correct = correct + (logits.argmax(dim=1) == labels).sum()
    except RuntimeError as error:  # set_sync_debug_mode("error") raises on a sync
        raised = str(error).splitlines()[0]
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    if raised:
        return False, f"CUDA sync inside a step: {raised}"
    ok = not steps.calls and not validation.calls and steps.ops > 0
    figures = (
        f"{len(data)} steps, {steps.ops} ops: {len(steps.calls)} waits in steps "
        f"{sorted(set(steps.calls))}, {len(validation.calls)} in validation batches; "
        f"epoch sums {[round(v, 3) for v in totals.tolist()[:2]]}, correct {int(correct)}"
    )
    return ok, figures


def timed_epoch(trainer, data, text, epoch: int) -> float:
    sync(trainer.ctx.device)
    start = time.perf_counter()
    stats = trainer.train_epoch(data, text, epoch)
    return stats["videos"] / (time.perf_counter() - start)


# Relative loss gap allowed between eager and graphed: the precision's rounding (bf16 keeps 8
# significant bits to fp16's 11) against fp32's summation order alone.
LOSS_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}


def check_graphed(store_path: Path, args: argparse.Namespace) -> tuple[bool, str]:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    runs = {}
    for name, compile in (("eager", False), ("graphed", True)):
        trainer, data, text, _ = build(store_path, args, compile)
        losses = [trainer.train_epoch(data, text, 5 + e)["loss"] for e in range(args.epochs)]
        weights = {k: v.detach().float().cpu() for k, v in trainer.head.state_dict().items()}
        runs[name] = (losses, weights, timed_epoch(trainer, data, text, 5 + args.epochs))
    (loss_e, w_e, vps_e), (loss_g, w_g, vps_g) = runs["eager"], runs["graphed"]
    tol = LOSS_TOLERANCE[trainer.precision]
    loss_gap = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(loss_e, loss_g, strict=True))
    weight_gap = max((w_g[k] - w_e[k]).abs().max().item() for k in w_e)
    breaks = sum(counters["graph_break"].values())
    graphs = counters["stats"]["unique_graphs"]
    ok = loss_gap <= tol and breaks == 0 and graphs <= 2
    figures = (
        f"precision {trainer.precision}; loss gap {loss_gap:.2e} (tol {tol:g}), max weight gap "
        f"{weight_gap:.2e}; {graphs} graphs, {breaks} breaks; eager {vps_e:,.0f} vs graphed "
        f"{vps_g:,.0f} videos/s ({vps_g / vps_e:.2f}x)"
    )
    return ok, figures


def dispatched_epoch(trainer, data, text, epoch: int) -> tuple[float, float]:
    """Seconds to dispatch an epoch's steps, and until the device is done with them."""
    trainer.module.train()
    data.set_epoch(epoch)
    sync(trainer.ctx.device)
    start = time.perf_counter()
    with tf32_matmuls(trainer.precision != "fp32"):
        trainer.run_steps(data, text, epoch)
    host = time.perf_counter() - start
    sync(trainer.ctx.device)
    return host, time.perf_counter() - start


def check_profile(store_path: Path, args: argparse.Namespace) -> tuple[bool, str]:
    """Host vs GPU time per step: the graphed step only pays off where host > GPU."""
    from torch.profiler import ProfilerActivity, profile

    trainer, data, text, _ = build(store_path, args, compile=False)
    device, steps = trainer.ctx.device, max(1, len(data))
    trainer.train_epoch(data, text, 5)  # warm-up: optimiser state, cached layouts
    host, wall = dispatched_epoch(trainer, data, text, 6)  # unprofiled: the profiler adds host
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        dispatched_epoch(trainer, data, text, 7)
    if args.workdir is not None:  # the trace stays in the work folder: too big to bring back
        prof.export_chrome_trace(str(args.workdir / "profile_trace.json"))
    gpu = "n/a"
    if cuda:
        kernel_us = sum(e.self_device_time_total for e in prof.key_averages())
        gpu_ms = kernel_us / 1000 / steps
        bound = "host-bound" if 1000 * host / steps > gpu_ms else "GPU-bound"
        gpu = f"{gpu_ms:.2f} ms/step ({bound})"
    figures = (
        f"{steps} steps, precision {trainer.precision}: host {1000 * host / steps:.2f} ms/step, "
        f"GPU {gpu}, wall {1000 * wall / steps:.2f} ms/step"
    )
    return steps >= 1, figures


CHECKS = {"sync": check_sync, "graphed": check_graphed, "profile": check_profile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=tuple(CHECKS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=2, help="graphed: compared epochs")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = work / f"steps_{args.dim}_{args.videos}.zarr"
        if not is_store(store):
            write_store(store, args.videos, args.dim, classes=400)
        ok, figures = CHECKS[args.check](store, args)
    print(f"SUMMARY {args.check} {'ok' if ok else 'FAIL'} {figures}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
