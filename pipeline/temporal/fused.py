"""The fused training losses (issue 10): M micro-batches in one batched pass, same numbers.

The per-micro-batch loop (``MoTE.training_losses`` once per micro-batch, the reference) runs
2 x M passes of the temporal module and M backward passes per optimiser step: thousands of
small operator calls. ``fused_losses`` runs every micro-batch at once with the draws made up
front on the CPU generator(s) (``routing.draw_step``): routed and WMR streams share attention
and LayerNorms, and each group's FFN is a weight merge (a one-hot row is exactly one expert).
``pipeline/train/step.py`` owns the one training step that uses it; ``fused_loss_fn`` compiles
the grouped part on request (CUDA graphs on CUDA, ``aot_eager`` on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.micro_batches import group_micro_batches
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.routing import StepDraws
from mote.pipeline.temporal.temporal_layers import ExpertFFN

LOSS_KEYS = ("total", "ce", "wmr", "mse")
FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # torch >= 2.4 has the fused AdamW kernel on both
LossFn = Callable[[Tensor, Tensor, Tensor, StepDraws], dict[str, Tensor]]

__all__ = [
    "LOSS_KEYS",
    "adamw",
    "adamw_options",
    "compile_options",
    "drop_unrouted_grads",
    "fused_loss_fn",
    "fused_losses",
    "grouped_losses",
    "optimizer_step",
]


def adamw_options(device: torch.device | str) -> dict[str, bool]:
    """The fastest AdamW implementation for ``device``: the fused kernel on CUDA and CPU, the
    multi-tensor (foreach) one elsewhere; all compute the per-tensor loop's update."""
    if torch.device(device).type in FUSED_ADAMW_DEVICES:
        return {"fused": True}
    return {"foreach": True}


def adamw(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    device: torch.device | str,
    **kwargs: Any,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)`` with ``adamw_options(device)``."""
    return torch.optim.AdamW(params, **kwargs, **adamw_options(device))


def compile_options(device: torch.device | str) -> dict[str, Any]:
    """How ``--compile`` compiles the grouped losses: inductor with CUDA graphs on CUDA (one
    graph replay instead of hundreds of kernel launches per step); elsewhere ``aot_eager``,
    the same capture (dynamo + AOT autograd, one graph, no breaks) run by eager kernels, so
    CI exercises the compiled path without a GPU or a C compiler."""
    if torch.device(device).type == "cuda":
        return {"mode": "reduce-overhead", "dynamic": False}
    return {"backend": "aot_eager", "dynamic": False}


def fused_loss_fn(model: MoTE, compile: bool = False) -> LossFn:
    """``fused_losses`` for ``model``; with ``compile``, its grouped part is compiled
    (``compile_options`` for the model's device). Grouping the batch stays eager, so the
    compiled graph sees fixed shapes: one graph for full batches, one recompile for the
    epoch's last, smaller batch."""
    if not compile:

        def eager(e: Tensor, labels: Tensor, text: Tensor, draws: StepDraws) -> dict[str, Tensor]:
            return fused_losses(model, e, labels, text, draws)

        return eager
    device = model.logit_scale.device

    def model_losses(
        eg: Tensor, yg: Tensor, valid: Tensor | None, text: Tensor, draws: StepDraws
    ) -> dict[str, Tensor]:
        return grouped_losses(model, eg, yg, valid, text, draws)

    grouped = torch.compile(model_losses, **compile_options(device))
    graphed = device.type == "cuda"

    def losses(e: Tensor, labels: Tensor, text: Tensor, draws: StepDraws) -> dict[str, Tensor]:
        group = group_micro_batches(e, labels, draws.micro_batches)
        if graphed:  # a new training step: the last step's graph outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        return group.restore_order(grouped(group.e, group.labels, group.valid, text, draws))

    return losses


def drop_unrouted_grads(model: MoTE, routed: list[set[int]] | None) -> None:
    """Without WMR the loop never touches an expert no micro-batch routed to: its gradient
    stays None and AdamW skips it (no decay, no moment update). The fused pass gives such an
    expert an exact zero gradient; setting it back to None keeps the update identical.

    ``routed``: per layer, the experts any micro-batch of the whole world routed to
    (``StepDraws.routed_experts`` of the world's draws, which every rank makes when an expert
    can miss its gradient: no communication, no read of the GPU); None when every expert takes
    part.
    """
    if routed is None or not model.architecture.routes_experts:
        return
    for layer, block in enumerate(model.transformer.resblocks):
        for expert in range(model.cfg.experts):
            if expert not in routed[layer]:
                for linear in (block.mlp.fc_up[expert], block.mlp.fc_dn[expert]):
                    linear.weight.grad = None
                    linear.bias.grad = None


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    """``optimizer.step()``, through the loss scaler when fp16 training has one."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def fused_losses(
    model: MoTE, e: Tensor, labels: Tensor, text: Tensor, draws: StepDraws
) -> dict[str, Tensor]:
    """``training_losses`` of M micro-batches in one batched pass, same numbers.

    e (M, b, T, D) with labels (M, b), or e (B, T, D) with labels (B,) split as the
    per-micro-batch loop splits it (``micro_batch_sizes``; M = draws.micro_batches). Each
    micro-batch keeps its own routed experts and WMR temperatures (``draws``); attention
    runs once on the whole batch (routed and WMR streams together). Returns "loss" (the
    mean over micro-batches of their totals: what the loop backpropagates), per
    micro-batch terms "total", "ce", "wmr", "mse" (M,), their sizes "sizes" (M,) and the
    routed cosines "logits" (B, C) in batch order.
    """
    group = group_micro_batches(e, labels, draws.micro_batches)
    out = grouped_losses(model, group.e, group.labels, group.valid, text, draws)
    return group.restore_order(out)


def grouped_losses(
    model: MoTE, eg: Tensor, yg: Tensor, valid: Tensor | None, text: Tensor, draws: StepDraws
) -> dict[str, Tensor]:
    """``fused_losses`` on a batch grouped by ``group_micro_batches``: eg
    (M, b, T, D), yg (M, b), valid (M, b) row weights (None: every row counts). Tensors in,
    fixed shapes: this is what ``torch.compile`` captures. "logits" (M b, C) come back in
    grouped order."""
    cfg, arch = model.cfg, model.architecture
    m, b, t, d = eg.shape
    if not arch.pools_only and (t > cfg.context or d != cfg.dim):
        raise ConfigError(
            f"features of shape {tuple(eg.shape)} do not fit this model (at most "
            f"{cfg.context} frames of width {cfg.dim})"
        )
    sizes = eg.new_full((m,), b) if valid is None else valid.sum(dim=1)

    def per_micro_batch(v: Tensor) -> Tensor:  # (M, b) per-sample values -> (M,) means
        return v.mean(dim=1) if valid is None else (v * valid).sum(dim=1) / sizes

    sigma = model.logit_scale.exp()
    flat_y = yg.reshape(m * b)
    x_r = None
    if arch.pools_only:
        x = eg
    elif not arch.routes_experts:  # one FFN per layer
        u = eg.reshape(m * b, t, d) + model.frame_position_embeddings.weight[:t]
        blocks = model.transformer.resblocks
        x = run_blocks(model, u, lambda i, h: blocks[i].mlp.expert(h, 0)).view(m, b, t, d) + eg
    else:
        x, x_r = _fused_streams(model, eg, draws)
    logits = model.cosine_logits(model.pool(x.reshape(m * b, t, d)), text)  # (Mb, C)
    ce = per_micro_batch(F.cross_entropy(sigma * logits, flat_y, reduction="none").view(m, b))
    wmr = mse = ce.new_zeros(m)
    if x_r is not None:
        wmr = per_micro_batch(_wmr_per_sample(model, x_r, x, logits, flat_y, text, sigma))
    if arch.wmr_mse_losses and cfg.mse:
        x_mse = x if x_r is None else x_r
        mse = per_micro_batch((x_mse - eg).pow(2).mean(dim=(2, 3)))
    w_ce, w_wmr, w_mse = cfg.loss_weights
    total = w_ce * ce + w_wmr * wmr + w_mse * mse
    return {
        "loss": total.mean(),
        "total": total,
        "ce": ce,
        "wmr": wmr,
        "mse": mse,
        "sizes": sizes,
        "logits": logits,
    }


def _fused_streams(model: MoTE, eg: Tensor, draws: StepDraws) -> tuple[Tensor, Tensor | None]:
    """Routed frame outputs x and WMR outputs x_r (None without WMR), both (M, b, T, D)."""
    cfg = model.cfg
    m, b, t, d = eg.shape
    if cfg.routing != "all" and draws.routed is None:
        raise ConfigError(f"draws hold no routed experts for routing={cfg.routing!r}")
    if cfg.wmr and draws.merge is None:
        raise ConfigError("draws hold no WMR coefficients, but the config has WMR on")
    u = eg + model.frame_position_embeddings.weight[:t]  # (M, b, T, D)
    blocks = model.transformer.resblocks
    if cfg.routing == "all":  # every micro-batch runs the same FFNs: one flat pass
        x = run_blocks(model, u.reshape(m * b, t, d), lambda i, h: blocks[i].mlp.all_experts(h))
        x = x.view(m, b, t, d) + eg
        if not cfg.wmr:
            return x, None
        merged = merged_ffns(model, draws.merge.to(eg.device))
        x_r = run_blocks(
            model,
            u.reshape(m * b, t, d),
            lambda i, h: ExpertFFN.grouped(h.view(m, b * t, d), *merged[i]),
        )
        return x, x_r.view(m, b, t, d) + eg
    coeffs = draws.routed.to(eg.device)
    groups = m
    if cfg.wmr:  # routed and WMR streams share attention and LayerNorms: one 2M-group pass
        coeffs = torch.cat([coeffs, draws.merge.to(eg.device)])
        u = torch.cat([u, u])
        groups = 2 * m
    merged = merged_ffns(model, coeffs)
    s = run_blocks(
        model,
        u.reshape(groups * b, t, d),
        lambda i, h: ExpertFFN.grouped(h.view(groups, b * t, d), *merged[i]),
    ).view(groups, b, t, d)
    if not cfg.wmr:
        return s + eg, None
    return s[:m] + eg, s[m:] + eg


def merged_ffns(model: MoTE, coeffs: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """phi = sum_i c_i theta_i (spec 4.3) for every group and layer at once: coeffs
    (G, L, N) -> per layer (W_up (G, 4D, D), b_up (G, 4D), W_dn (G, D, 4D), b_dn (G, D)).
    A one-hot row gives exactly that expert (1 * w + 0 * w' = w), so routed passes are
    merges too. Merged in fp32 under autocast, as ``merged_weights`` does.

    The layers come apart with ``unbind``: its backward stacks the L gradients once,
    where indexing ``w[i]`` per layer would make each layer's backward allocate and
    zero-fill the whole (L, G, ...) tensor (about 2.5 GB of traffic per step at D=512)."""
    g, layers, n = coeffs.shape
    mlps = [block.mlp for block in model.transformer.resblocks]

    def merge(tensors: list[Tensor]) -> tuple[Tensor, ...]:
        stacked = torch.stack(tensors).view(layers, n, -1)  # (L, N, P)
        return torch.bmm(c, stacked).view(layers, g, *tensors[0].shape).unbind(0)

    with torch.autocast(coeffs.device.type, enabled=False):
        c = coeffs.transpose(0, 1).to(mlps[0].fc_up[0].weight.dtype)  # (L, G, N)
        merged = (
            merge([fc.weight for mlp in mlps for fc in mlp.fc_up]),
            merge([fc.bias for mlp in mlps for fc in mlp.fc_up]),
            merge([fc.weight for mlp in mlps for fc in mlp.fc_dn]),
            merge([fc.bias for mlp in mlps for fc in mlp.fc_dn]),
        )
    return list(zip(*merged, strict=True))


def run_blocks(model: MoTE, u: Tensor, ffn: Any) -> Tensor:
    """The blocks of spec 2.2 on u (R, T, D), with ``ffn(layer, ln_2(u))`` as the FFN."""
    r, t, d = u.shape
    for i, block in enumerate(model.transformer.resblocks):
        u = u + self_attention(block.attn, block.ln_1(u))
        u = u + ffn(i, block.ln_2(u)).reshape(r, t, d)
    return u


def _wmr_per_sample(
    model: MoTE, x_r: Tensor, x: Tensor, logits: Tensor, labels: Tensor, text: Tensor, sigma: Tensor
) -> Tensor:
    """``MoTE._wmr_term`` before its batch mean: (M, b) per-sample values."""
    m, b = x_r.shape[:2]
    kind = model.cfg.wmr_loss
    if kind == "mse":
        return (x_r - x.detach()).pow(2).mean(dim=(2, 3))
    logits_r = sigma * model.cosine_logits(model.pool(x_r.flatten(0, 1)), text)
    if kind == "ce":
        return F.cross_entropy(logits_r, labels, reduction="none").view(m, b)
    target = F.softmax((sigma * logits).detach(), dim=-1)
    kl = F.kl_div(F.log_softmax(logits_r, dim=-1), target, reduction="none")
    return kl.sum(dim=-1).view(m, b)


def self_attention(attn: nn.MultiheadAttention, h: Tensor) -> Tensor:
    """``attn(h, h, h)[0]`` for batch-first h (R, T, D) with the same parameters and the same
    scaled-dot-product kernel, without the module's layout round trips (fewer operator calls)."""
    r, t, d = h.shape
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(r, t, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (R, H, T, D / H) each
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(r, t, d)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
