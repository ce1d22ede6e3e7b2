"""Benchmark (not a test): does a node scale? Per-rank launch counts and host time per step of
the train-temporal step for 1, 2, 4, 8 processes at the same global batch (issue 14).

Each W runs ``torchrun --nproc-per-node W`` (gloo on the CPU, nccl on CUDA) over the same store
with the shared Trainer and FeatureBatches, the spec's global batch 192 and the default
micro-batches for W. Every rank reports, over one epoch after a warm-up epoch:

  ops/step       aten ops dispatched per step on this rank, views included, and those that
                 launch a kernel on a GPU (views, ``detach`` and empty allocations left out);
  outside/step   the launching ops outside the compiled losses' forward and backward
                 (``--compile``): what a rank still launches one by one when the losses replay
                 as CUDA graphs (the optimiser, the batch gather, the gradient sync);
  per epoch      the launching ops before the epoch's first step and after its last (its
                 sums' buffers, its one weight-finiteness check, its one sum of statistics
                 over ranks), counted once per epoch and left out of the per-step figures;
  host ms/step   wall time per step. At ``--dim 8`` (the default) compute is negligible, so it
                 is the framework's host cost (Python, dispatch, autograd, optimiser), the cost
                 that does not shrink with a rank's share of the batch.

Then the arithmetic that takes them to a GPU node: with eager steps each rank pays the same host
time per step whatever its share, so G GPUs at one global batch reach at most
batch / host_time videos/s; the target is >= 0.8 x G x one GPU.

    python bench/ddp_scaling.py                          # CPU, gloo: 1, 2, 4, 8 processes
    python bench/ddp_scaling.py --device cuda --dim 512 --worlds 1,2,4,8 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

BATCH = 192  # the spec's global batch for B/16 (spec 7)
GPU_STEP_MS_1 = 1000 * BATCH / 20_000  # one GPU at the 20,000 videos/s target: 9.6 ms/step
ISSUE_US_PER_OP = 15.5  # issue 14: 6.9 ms of framework time for 445 launching ops, one core
NO_KERNEL = {"detach", "empty", "empty_strided", "empty_like", "lift_fresh", "_to_copy_noop"}


class OpCounter(TorchDispatchMode):
    """Counts dispatched aten ops: all, and those that would launch a GPU kernel.

    ``graphed=True`` counts only what would still launch one by one if the losses replayed as
    a CUDA graph (``--compile`` on CUDA): nothing inside their forward (``paused``), and of the
    backward only ``out=`` ops and c10d collectives (a reducer's, were one hooked into it),
    because autograd replays the losses' backward as a graph too. The gradient sync
    (``grad_sync``) runs after the backward, so it is counted whole.
    """

    def __init__(self, graphed: bool = False) -> None:
        super().__init__()
        self.all = self.launching = 0
        self.graphed = graphed
        self.paused = False
        self.once = True  # outside the epoch's steps (``StepsOnly``): counted per epoch
        self.epoch_launching = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.graphed:
            in_backward = torch._C._current_graph_task_id() != -1
            from_reducer = func.namespace == "c10d" or func._overloadname == "out"
            counted = not self.paused and (not in_backward or from_reducer)
        else:
            counted = True
        name = func.overloadpacket.__name__
        if counted and self.once:
            self.epoch_launching += not func.is_view and name not in NO_KERNEL
        elif counted:
            self.all += 1
            if not func.is_view and name not in NO_KERNEL:
                self.launching += 1
        return func(*args, **(kwargs or {}))


class StepsOnly:
    """An epoch's batches that switch the counter to per-step counting from the first batch's
    fetch to the end of the last step: what the epoch does before its first step (its sums'
    buffers) and after its last (the finiteness check, the sums over ranks) counts once per
    epoch."""

    def __init__(self, data, counters: list[OpCounter]) -> None:
        self.data, self.counters = data, counters

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __iter__(self):
        self.counters[0].once = False
        yield from self.data
        self.counters[0].once = True


def worker(args: argparse.Namespace) -> None:
    """One rank: build train-temporal's pieces, warm up one epoch, measure one epoch."""
    from mote.cache_schema.feature_store import FeatureStore
    from mote.pipeline.temporal.features import InMemoryFeatures
    from mote.pipeline.temporal.mote_model import MoTE
    from mote.pipeline.train.distributed import DistContext
    from mote.pipeline.train.feature_batches import FeatureBatches
    from mote.pipeline.train.loop import Trainer
    from mote.pipeline.train.schedule import spec_optimizer
    from mote.pipeline.train.train_settings import resolve
    from mote.stages.train_temporal import TrainConfig, model_config

    torch.set_num_threads(1)
    store = FeatureStore.open(args.store)
    ctx = DistContext.from_env(args.device)
    cfg = resolve(
        TrainConfig(
            train=args.store, out=Path("unused"), batch_size=BATCH, compile=args.compile
        ),
        args.dim,
        ctx.world_size,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MoTE(model_config(cfg, args.dim)).to(ctx.device)
    text = torch.nn.functional.normalize(
        torch.from_numpy(store.text_embeddings[:]).float(), dim=-1
    ).to(ctx.device)
    trainer = Trainer(cfg, ctx, model, spec_optimizer(cfg, model))
    data = FeatureBatches(InMemoryFeatures(store), BATCH, cfg.micro_batches, ctx, 0)
    counter = OpCounter()
    losses = trainer.losses._fused_losses
    if losses is not None:  # pause the count inside the (compiled) losses: graph replay

        def outside(*a, **k):
            counter.paused = True
            try:
                return losses(*a, **k)
            finally:
                counter.paused = False

    counters = [counter]
    steps_only = StepsOnly(data, counters)
    trainer.train_epoch(data, text, 5)  # warm-up (and compilation)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    with counter:
        trainer.train_epoch(steps_only, text, 6)
    all_ops, launching, per_epoch = counter.all, counter.launching, counter.epoch_launching
    if losses is not None:
        counter = counters[0] = OpCounter(graphed=True)
        trainer.losses._fused_losses = outside
        with counter:
            trainer.train_epoch(steps_only, text, 7)
        trainer.losses._fused_losses = losses
    steps = len(data)
    times = []
    for epoch in range(args.epochs):
        ctx.barrier()
        start = time.perf_counter()
        trainer.train_epoch(data, text, 8 + epoch)
        times.append((time.perf_counter() - start) / steps)
    row = {
        "world": ctx.world_size,
        "rank": ctx.rank,
        "micro_batches": cfg.micro_batches,
        "share": BATCH // ctx.world_size,
        "steps": steps,
        "ops_per_step": all_ops / steps,
        "launching_per_step": launching / steps,
        "outside_losses_per_step": counter.launching / steps if losses is not None else None,
        "launching_per_epoch": per_epoch,
        "host_ms_per_step": 1000 * statistics.median(times) if times else None,
        **compile_counts(),
    }
    rows = ctx.gather(row)  # one print from rank 0: ranks' lines would interleave
    if ctx.is_main:
        print("\n".join("ROW " + json.dumps(r) for r in rows), flush=True)
    ctx.close()


def compile_counts() -> dict[str, int]:
    """What ``torch.compile`` made of this rank's epochs (``--compile``): frames captured,
    graphs the backend compiled (a graph splitter would compile several per frame), breaks."""
    from torch._dynamo.utils import counters

    return {
        "graphs": counters["stats"]["unique_graphs"],
        "backend_graphs": counters["aot_autograd"]["total"],
        "graph_breaks": sum(counters["graph_break"].values()),
    }


def run_world(world: int, args: argparse.Namespace, store: Path) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(world), __file__, "--worker", "--store", str(store)]
    command += ["--device", args.device, "--dim", str(args.dim), "--epochs", str(args.epochs)]
    command += ["--compile"] if args.compile else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode:
        sys.exit(f"W={world} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("ROW ")]


def projection(world: int, row: dict, per_op_us: float) -> dict[str, float | None]:
    """One W of the node arithmetic at ``per_op_us`` of host time per launching op: host ms
    per step and videos/s as a fraction of W x one GPU, eager and with the losses replayed as
    CUDA graphs (their host cost shrinks to the launches left outside, about 0.05 ms for the
    two graph replays included)."""
    gpu_ms = GPU_STEP_MS_1 / world
    host_ms = row["launching_per_step"] * per_op_us / 1000
    eager = BATCH / max(host_ms, gpu_ms) * 1000
    out: dict[str, float | None] = {"gpu_ms": gpu_ms, "host_ms": host_ms, "eager": eager}
    out["eager_x_w"] = eager / (world * 20_000)
    out["graphed_ms"] = out["graphed"] = out["graphed_x_w"] = None
    if row.get("outside_losses_per_step") is not None:
        graphed_ms = row["outside_losses_per_step"] * per_op_us / 1000 + 0.05
        graphed = BATCH / max(graphed_ms, gpu_ms) * 1000
        out.update(graphed_ms=graphed_ms, graphed=graphed, graphed_x_w=graphed / (world * 20_000))
    return out


def node_arithmetic(rows: dict[int, dict], per_op_us: float) -> list[str]:
    """From per-rank launch counts to a node (``projection`` for each W), as lines."""
    lines = [f"at {per_op_us:.1f} us of host time per launching op; one GPU at the 20,000 "
             f"videos/s target spends {GPU_STEP_MS_1:.1f} ms per step of {BATCH}:"]  # fmt: skip
    for world, row in sorted(rows.items()):
        p = projection(world, row, per_op_us)
        line = (
            f"  W={world}: eager host {p['host_ms']:.1f} ms vs GPU {p['gpu_ms']:.1f} ms -> "
            f"{p['eager']:,.0f} videos/s = {p['eager_x_w']:.2f} x W x one GPU"
        )
        if p["graphed"] is not None:
            line += (
                f"; graphed host {p['graphed_ms']:.1f} ms -> {p['graphed']:,.0f} videos/s = "
                f"{p['graphed_x_w']:.2f} x W x one GPU"
            )
        lines.append(line)
    return lines


def counts_table(rows: dict[int, dict]) -> str:
    """The scaling table of docs/performance.md (``--markdown``): counts and the arithmetic on
    them only, no timings, so it does not depend on the machine and tests/test_bench_tables.py
    checks the committed one."""
    lines = [
        "| W | micro-batches | videos per rank | aten ops/step/rank | launching | outside graphed "
        "losses | launching per epoch | eager x W x one GPU | graphed x W x one GPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for world, row in sorted(rows.items()):
        p = projection(world, row, ISSUE_US_PER_OP)
        outside = row["outside_losses_per_step"]
        graphed = "-" if p["graphed_x_w"] is None else f"{p['graphed_x_w']:.2f}"
        lines.append(
            f"| {world} | {row['micro_batches']} | {row['share']} | {row['ops_per_step']:,.0f} "
            f"| {row['launching_per_step']:,.0f} | {'-' if outside is None else f'{outside:.0f}'} "
            f"| {row['launching_per_epoch']} | {p['eager_x_w']:.2f} | {graphed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl)")
    parser.add_argument("--dim", type=int, default=8, help="feature width (8: host cost only)")
    parser.add_argument("--worlds", default="1,2,4,8", help="process counts")
    parser.add_argument("--videos", type=int, default=BATCH * 4, help="store size")
    parser.add_argument(
        "--epochs", type=int, default=2, help="timed epochs (median step; 0: counts only)"
    )
    parser.add_argument("--compile", action="store_true", help="compiled losses")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--markdown", action="store_true", help="print the counts table")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import write_store

    rows: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        store = Path(work) / "scaling.zarr"
        write_store(store, args.videos, args.dim, classes=400)
        print(f"{'W':>3} {'M':>3} {'share':>6} {'ops/step':>9} {'launch':>7} {'outside':>8} "
              f"{'/epoch':>7} {'host ms/step (ranks)':>24}")  # fmt: skip
        for world in (int(w) for w in args.worlds.split(",")):
            ranks = run_world(world, args, store)
            row = dict(ranks[0])
            timed = all(r["host_ms_per_step"] is not None for r in ranks)
            row["host_ms_per_step"] = max(r["host_ms_per_step"] for r in ranks) if timed else None
            row["host_ms_per_rank"] = [round(r["host_ms_per_step"], 2) for r in ranks if timed]
            rows[world] = row
            outside = row["outside_losses_per_step"]
            print(
                f"{world:>3} {row['micro_batches']:>3} {row['share']:>6} "
                f"{row['ops_per_step']:>9.0f} {row['launching_per_step']:>7.0f} "
                f"{'-' if outside is None else f'{outside:.0f}':>8} "
                f"{row['launching_per_epoch']:>7} "
                f"{', '.join(f'{t:.1f}' for t in row['host_ms_per_rank']) or '-':>24}"
            )
    one = rows[min(rows)]
    if one["host_ms_per_step"] is not None:
        measured_us = 1000 * one["host_ms_per_step"] / one["launching_per_step"]
        print(
            f"host time per launching op here (W={min(rows)}): {measured_us:.1f} us; the "
            f"issue measured {ISSUE_US_PER_OP} us on a GPU host (6.9 ms for 445 ops)"
        )
    if max(rows) > (os.cpu_count() or 1):
        print(f"(W > {os.cpu_count()} cores here: those host ms include waiting for a core)")
    print("\n".join(node_arithmetic(rows, ISSUE_US_PER_OP)))
    if args.compile:
        print("compiled: " + "; ".join(
            f"W={w}: {r['graphs']} graphs, {r['backend_graphs']} compiled by the backend, "
            f"{r['graph_breaks']} breaks" for w, r in sorted(rows.items())))  # fmt: skip
    if args.markdown:
        print(counts_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "args": vars(args)}, default=str))


if __name__ == "__main__":
    main()
