"""The gradient sync (issue 29) on 2 gloo processes: one flat buffer summed in one all-reduce,
each ``.grad`` a view of it, two ops per step whatever the parameter count, rank 0's weights
on every rank from the start."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from mote.pipeline.train.grad_sync import GradientSync


class Ops(TorchDispatchMode):
    """The aten ops a block dispatches, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))


def rank_body(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different weights: the sync must start from rank 0's
        net = model()
        sync = GradientSync(net, world_size=2, find_unused=False)
        x = torch.full((5, 3), float(rank + 1))
        net(x).square().sum().backward()
        with Ops() as ops:
            sync.sync()
        flat = sync.flats[0].buffer
        views = all(
            p.grad.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
            for p in net.parameters()
        )
        torch.save(
            {
                "ops": ops.names,
                "views": views,
                "state": net.state_dict(),
                "grads": [p.grad.clone() for p in net.parameters()],
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_ranks_sum_their_gradients_in_one_all_reduce_into_views(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(rank_body, args=(init, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for got in ranks:
        assert got["ops"] == ["_foreach_copy_", "allreduce_"], got["ops"]
        assert got["views"]
    torch.manual_seed(0)
    reference = model()  # rank 0's weights, on one process, fed both ranks' inputs
    reference.load_state_dict(ranks[0]["state"])
    for rank in range(2):
        reference(torch.full((5, 3), float(rank + 1))).square().sum().backward()
    for got in ranks:
        assert got["state"].keys() == ranks[0]["state"].keys()
        for key, value in got["state"].items():
            torch.testing.assert_close(value, ranks[0]["state"][key], rtol=0, atol=0)
        for grad, p in zip(got["grads"], reference.parameters(), strict=True):
            torch.testing.assert_close(grad, p.grad, rtol=1e-6, atol=1e-6)
