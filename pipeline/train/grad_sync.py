"""Gradient synchronisation in one collective per step: a flat buffer, all-reduced once.

DDP launches one op per parameter tensor (its scaling of each gradient into a bucket) plus its
bucket ops, and under ``torch.compile`` its graph splitter cuts the compiled losses at bucket
boundaries (issue 29). Here the gradients of a step are copied into one flat buffer per dtype
(one ``_foreach_copy_``), summed over ranks in one ``all_reduce``, and each parameter's
``.grad`` becomes a view of the buffer: two launches per step whatever the parameter count, the
same code on gloo (CPU) and nccl (CUDA), and nothing that waits for the device. The loss is
already weighted so that the sum over ranks is the whole batch's mean (``micro_batch_weight``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist


class FlatGradients:
    """One flat buffer over a group of parameters of one dtype and device, with each
    parameter's gradient-shaped view of it made once (setting ``.grad`` to a view launches
    nothing)."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        total = sum(p.numel() for p in params)
        self.buffer = torch.zeros(total, dtype=params[0].dtype, device=params[0].device)
        self.views: list[torch.Tensor] = []
        offset = 0
        for p in params:
            self.views.append(self.buffer[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def sum_over_ranks(self, find_unused: bool) -> None:
        """Copy this rank's gradients in, sum over ranks, point each ``.grad`` at the sum.

        A parameter without a gradient here counts as zero. It gets the sum only when some rank
        gave it a gradient (``find_unused``: one host read of a per-parameter flag, the price of
        the per-micro-batch step of routed MoTE without WMR, as DDP's search was); otherwise
        every parameter is taken to have one (the fused step gives each a gradient)."""
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        if len(have) < len(self.params):
            self.buffer.zero_()
        torch._foreach_copy_([self.views[i] for i in have], [self.params[i].grad for i in have])
        used = None
        if find_unused:
            flags = torch.zeros(len(self.params), device=self.buffer.device)
            flags[have] = 1.0
            dist.all_reduce(flags)
            used = flags.tolist()
        dist.all_reduce(self.buffer)
        for i, (p, view) in enumerate(zip(self.params, self.views, strict=True)):
            p.grad = view if used is None or used[i] else None


class GradientSync:
    """Sums the gradients of ``module``'s trainable parameters over the ranks after the last
    backward of a step (``sync``); a no-op on one process."""

    def __init__(self, module: torch.nn.Module, world_size: int, find_unused: bool) -> None:
        self.world_size = world_size
        self.find_unused = find_unused
        groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
        for p in module.parameters():
            if p.requires_grad:
                groups.setdefault((p.dtype, p.device), []).append(p)
        self.flats = [FlatGradients(ps) for ps in groups.values()] if world_size > 1 else []
        if world_size > 1:
            broadcast_state(module)

    def sync(self) -> None:
        for flat in self.flats:
            flat.sum_over_ranks(self.find_unused)


def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, once at the start, as DDP does: every
    rank then steps from the same weights."""
    with torch.no_grad():
        for tensor in _state(module):
            dist.broadcast(tensor, src=0)


def _state(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()
