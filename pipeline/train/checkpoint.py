"""The epoch checkpoint --resume continues from: weights, optimiser, loss scaler, epoch, best, and
the random state of every rank, so a resumed run ends with the weights of an uninterrupted one.

Rank 0 gathers the other ranks' random states and writes one file (RunFolder.save_checkpoint);
on resume each rank reads the file and restores its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from mote.pipeline.errors import ConfigError, RunFileError
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.train.distributed import DistContext


@dataclass
class RandomState:
    """This rank's random streams: a routing generator per micro-batch slot of the world.

    ``owned`` are the slots this rank trains; the checkpoint takes each slot from its owner.
    (Only the owner's copy is sure to be current: a rank draws other slots only in the fused
    step of routed experts without WMR.)"""

    routing: dict[int, torch.Generator] = field(default_factory=dict)
    owned: Iterable[int] | None = None  # None: every slot in ``routing``

    def capture(self, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """This rank's state as checkpoint tensors and metadata (keys carry the rank/slot)."""
        owned = self.routing if self.owned is None else self.owned
        tensors = {f"routing.{slot}": self.routing[slot].get_state() for slot in owned}
        tensors[f"rank{rank}.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors[f"rank{rank}.cuda"] = torch.cuda.get_rng_state()
        numpy_state = np.random.get_state(legacy=False)
        numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
        meta = {
            f"rank{rank}.numpy": json.dumps(numpy_state),
            f"rank{rank}.python": json.dumps(random.getstate()),
        }
        return tensors, meta

    def restore(self, rank: int, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        for slot, generator in self.routing.items():
            generator.set_state(tensors[f"routing.{slot}"])
        torch.set_rng_state(tensors[f"rank{rank}.torch"])
        if f"rank{rank}.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors[f"rank{rank}.cuda"])
        numpy_state = json.loads(meta[f"rank{rank}.numpy"])
        numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_state)
        version, internal, gauss = json.loads(meta[f"rank{rank}.python"])
        random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    folder: RunFolder,
    ctx: DistContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    best: dict,
    random_state: RandomState,
) -> None:
    """A collective: every rank calls it; rank 0 writes the file."""
    gathered = ctx.gather(random_state.capture(ctx.rank))
    if not ctx.is_main:
        return
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value)
    meta = {
        "epoch": str(epoch),
        "best": json.dumps(best),
        "param_groups": json.dumps(state["param_groups"]),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else {}),
        "world_size": str(ctx.world_size),
    }
    for rank_tensors, rank_meta in gathered:
        tensors.update(rank_tensors)
        meta.update(rank_meta)
    folder.save_checkpoint(tensors, meta)


def load_checkpoint(
    folder: RunFolder,
    ctx: DistContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    random_state: RandomState,
) -> tuple[int, dict]:
    """Restore everything ``save_checkpoint`` wrote; returns (epochs done, best so far). Each
    optimiser group keeps the base lr it was built with: ``--lr`` may change on resume."""
    tensors, meta = folder.read_checkpoint()
    if "world_size" not in meta:
        raise RunFileError(
            f"{folder.checkpoint_file}: written by an older mote without per-rank random state; "
            "delete it to restart the run from scratch, or retrain into a new --out"
        )
    if int(meta["world_size"]) != ctx.world_size:
        raise ConfigError(
            f"{folder.path}: the run was trained by {meta['world_size']} processes, this resume "
            f"has {ctx.world_size}; resume with torchrun --nproc-per-node {meta['world_size']}"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, slot = name.split(".", 2)
            state["state"].setdefault(int(index), {})[slot] = value
    base_lrs = [group["base_lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["base_lr"] = base_lr
    if scaler is not None and json.loads(meta["scaler"]):
        scaler.load_state_dict(json.loads(meta["scaler"]))
    random_state.restore(ctx.rank, tensors, meta)
    return int(meta["epoch"]), json.loads(meta["best"])
