"""One process or many: torchrun's environment, the process group, reductions.

``torchrun --nproc-per-node N`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them a command
runs as a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, PeerLost
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
        """Read torchrun's variables; start the group (nccl on CUDA, gloo on CPU) when > 1.

        The CUDA device is the one the launcher leaves: ``cuda:LOCAL_RANK`` when a process
        sees every GPU of its node, ``cuda:0`` when it sees one (SLURM, some k8s operators
        give each rank its own ``CUDA_VISIBLE_DEVICES``), ``--device cuda:K`` on one process.
        It becomes the current device, so RNG state, pinned-memory threads and NCCL use it.
        """
        world, rank, local = launcher_environment(os.environ)
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = rank_device(resolved, local if world > 1 else None)
            torch.cuda.set_device(resolved)
        ctx = cls(rank, world, local, resolved)
        if world > 1 and not dist.is_initialized():
            if resolved.type == "cuda":
                dist.init_process_group("nccl", device_id=resolved)
            else:
                dist.init_process_group("gloo")
            ctx.owns_group = True
        return ctx

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

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

    def everyone(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank (in rank order): what each node sees."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
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


LAUNCH_HINT = (
    "start the processes with torchrun (it sets them all), or set WORLD_SIZE, RANK, "
    "LOCAL_RANK, MASTER_ADDR and MASTER_PORT together"
)


def launcher_environment(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(world size, rank, local rank) from a launcher's variables, checked up front: a
    half-set environment is one line naming what is wrong, not a rendezvous error later."""

    def number(name: str, default: int) -> int:
        text = env.get(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a whole number; {LAUNCH_HINT}") from None

    world, rank, local = number("WORLD_SIZE", 1), number("RANK", 0), number("LOCAL_RANK", 0)
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world}: must be at least 1; {LAUNCH_HINT}")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} with WORLD_SIZE={world}: must be 0..{world - 1}")
    if local < 0:
        raise ConfigError(f"LOCAL_RANK={local}: must be >= 0; {LAUNCH_HINT}")
    if world > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={world} but {' and '.join(missing)} not set; {LAUNCH_HINT}"
            )
        number("MASTER_PORT", 0)
    return world, rank, local


def rank_device(
    device: torch.device, local_rank: int | None, count: int | None = None
) -> torch.device:
    """The CUDA device of a process: ``device`` alone (``cuda`` is ``cuda:0``); under torchrun
    ``cuda:LOCAL_RANK``, or ``cuda:0`` when the launcher shows each rank only its own GPU.
    ``count``: the visible CUDA devices (default: ask torch)."""
    count = torch.cuda.device_count() if count is None else count
    if local_rank is None:
        index = device.index or 0
        if index >= count:
            raise ConfigError(
                f"--device {device}: only {count} CUDA device(s) here (0 to {count - 1})"
            )
        return torch.device("cuda", index)
    if count == 1:
        return torch.device("cuda", 0)
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank}: only {count} CUDA devices here; start at most that "
            "many processes per node (torchrun --nproc-per-node), or give each process its "
            "own GPU with CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local_rank)


def run_on_every_rank(device: str, progress: Progress, body: Callable[..., T]) -> T:
    """``body(ctx, progress)`` in this process's rank of a torchrun world (or alone): only rank 0
    reports progress, and the process group is closed however ``body`` ends."""
    ctx = DistContext.from_env(device)
    try:
        return body(ctx, progress if ctx.is_main else NullProgress())
    except RuntimeError as error:
        reason = peer_lost(error) if ctx.distributed else None
        if reason is None:
            raise
        raise PeerLost(f"{stopped_process(ctx)} stopped ({reason}): rerun the same launch line "
                       "with --resume") from error  # fmt: skip
    finally:
        ctx.close()


# What a collective (gloo, NCCL, the c10d store) says when the process at the other end is gone.
_PEER_GONE = re.compile(
    r"connection (?:reset|closed|refused) by peer|broken pipe|socket timeout|timed out|"
    r"connection reset|remote process exited|communicator was aborted|end of file",
    re.IGNORECASE,
)


def peer_lost(error: BaseException) -> str | None:
    """A short reason when ``error`` says another process of the job is gone, else None."""
    found = _PEER_GONE.search(str(error))
    if found:
        return found.group(0).lower()
    if type(error).__name__ in ("DistNetworkError", "DistBackendError"):
        return type(error).__name__
    return None


def stopped_process(ctx: DistContext) -> str:
    """Which process stopped, as far as this one can tell: of two, the other one."""
    if ctx.world_size == 2:
        return f"process {1 - ctx.rank} of 2"
    return f"a process of {ctx.world_size} (not this one, {ctx.rank})"
