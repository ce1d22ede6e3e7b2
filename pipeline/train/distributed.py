"""One process or many: torchrun's environment, the process group, DDP wrapping, reductions.

``torchrun --nproc-per-node N`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them a command
runs as a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import NullProgress, Progress

T = TypeVar("T")


@dataclass
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this context started the process group and ends it

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Read torchrun's variables; start the group (nccl on CUDA, gloo on CPU) when > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        resolved = resolve_device(device)
        if resolved.type == "cuda" and world > 1:
            if local >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {local}: only {torch.cuda.device_count()} CUDA devices here; "
                    "start at most that many processes per node (torchrun --nproc-per-node)"
                )
            resolved = torch.device("cuda", local)
            torch.cuda.set_device(resolved)
        ctx = cls(rank, world, local, resolved)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
            ctx.owns_group = True
        return ctx

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: torch.nn.Module, find_unused_parameters: bool = True):
        """DDP when there are several processes, else the module itself.

        ``find_unused_parameters``: without WMR a routed step leaves some experts without a
        gradient (spec 13, pitfall 12), and DDP must then not wait for them."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=ids, find_unused_parameters=find_unused_parameters
        )

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place, also returned); a metric sum of the whole world."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None elsewhere."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """End the process group if this context started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return (
        module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
    )


def run_on_every_rank(device: str, progress: Progress, body: Callable[..., T]) -> T:
    """``body(ctx, progress)`` in this process's rank of a torchrun world (or alone): only rank 0
    reports progress, and the process group is closed however ``body`` ends."""
    ctx = DistContext.from_env(device)
    try:
        return body(ctx, progress if ctx.is_main else NullProgress())
    finally:
        ctx.close()
