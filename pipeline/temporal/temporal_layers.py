"""The temporal module's layers (spec 2.2, 2.5): the expert FFN, the pre-LN block and the stack
of blocks, no I/O. The architectures in ``architectures/`` build their parts from these;
``mote_model.py`` runs them. Parameter names mirror the reference checkpoint (spec 14)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-12  # spec 2.2: TF-style LayerNorm, not PyTorch's 1e-5
INIT_STD = 0.02  # spec 2.6

# What one layer's FFN runs: an expert index, merge coefficients (N,), or "all" experts averaged.
ExpertChoice = int | Tensor | Literal["all"]


def quick_gelu(x: Tensor) -> Tensor:
    """a * sigmoid(1.702 a), as in OpenAI CLIP (spec 2.2)."""
    return x * torch.sigmoid(1.702 * x)


class ExpertFFN(nn.Module):
    """N complete FFN experts of one layer (spec 2.5); runs one, a weight merge, or all."""

    def __init__(self, dim: int, n: int) -> None:
        super().__init__()
        self.fc_up = nn.ModuleList(nn.Linear(dim, 4 * dim) for _ in range(n))
        self.fc_dn = nn.ModuleList(nn.Linear(4 * dim, dim) for _ in range(n))
        # Frozen zeros: softmax of it gives the uniform inference merge (spec 2.5, 3.2).
        self.register_buffer("mote_fusion_weight", torch.zeros(n))

    @property
    def n(self) -> int:
        return len(self.fc_up)

    def merge_coefficients(self) -> Tensor:
        """Inference merge coefficients (N,): softmax(0) = 1/N each."""
        return torch.softmax(self.mote_fusion_weight.float(), dim=0)

    def merged_weights(self, coeffs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """phi = sum_i c_i theta_i for W_up, b_up, W_dn, b_dn, inside autograd (spec 4.3)."""
        # Coefficients drawn on the host for a model on the GPU (WMR) become Python floats: no
        # host-to-device copy, no wait; coefficients where the weights live (the stored
        # inference merge) stay tensors, also on the CPU, so it takes the GPU's path.
        weight = self.fc_up[0].weight
        c = coeffs.tolist() if coeffs.device != weight.device else coeffs.to(weight.dtype)

        def merge(tensors: list[Tensor]) -> Tensor:
            merged = c[0] * tensors[0]
            for ci, t in zip(c[1:], tensors[1:], strict=True):
                merged = merged + ci * t
            return merged

        return (
            merge([expert.weight for expert in self.fc_up]),
            merge([expert.bias for expert in self.fc_up]),
            merge([expert.weight for expert in self.fc_dn]),
            merge([expert.bias for expert in self.fc_dn]),
        )

    def forward(self, h: Tensor, choice: ExpertChoice) -> Tensor:
        # h: (B, T, D) -> (B, T, D)
        if isinstance(choice, Tensor):  # weight merge (spec 3.2 / 4.3), functional linear
            w_up, b_up, w_dn, b_dn = self.merged_weights(choice)
            return F.linear(quick_gelu(F.linear(h, w_up, b_up)), w_dn, b_dn)
        if isinstance(choice, str):  # "all": every expert sees the batch, outputs averaged
            outs = [self.expert(h, i) for i in range(self.n)]
            return torch.stack(outs).mean(dim=0)
        return self.expert(h, choice)

    def expert(self, h: Tensor, i: int) -> Tensor:
        return self.fc_dn[i](quick_gelu(self.fc_up[i](h)))  # (B, T, 4D) inside

    def stacked(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every expert's W_up (N, 4D, D), b_up (N, 4D), W_dn (N, D, 4D), b_dn (N, D), in the
        autograd graph, so one batched op can run several experts or merges at once."""
        return (
            torch.stack([expert.weight for expert in self.fc_up]),
            torch.stack([expert.bias for expert in self.fc_up]),
            torch.stack([expert.weight for expert in self.fc_dn]),
            torch.stack([expert.bias for expert in self.fc_dn]),
        )

    @staticmethod
    def grouped(h: Tensor, w_up: Tensor, b_up: Tensor, w_dn: Tensor, b_dn: Tensor) -> Tensor:
        """Group g runs its own FFN: h (G, R, D) with W_up (G, 4D, D), b_up (G, 4D), W_dn
        (G, D, 4D), b_dn (G, D) -> (G, R, D), two batched matmuls."""
        a = quick_gelu(torch.baddbmm(b_up.unsqueeze(1), h, w_up.transpose(1, 2)))
        return torch.baddbmm(b_dn.unsqueeze(1), a, w_dn.transpose(1, 2))

    def all_experts(self, h: Tensor) -> Tensor:
        """Routing "all" batched: every expert on h (..., D), outputs averaged -> (..., D)."""
        w_up, b_up, w_dn, b_dn = self.stacked()
        flat = h.reshape(1, -1, h.shape[-1]).expand(self.n, -1, -1)  # (N, R, D)
        a = quick_gelu(torch.baddbmm(b_up.unsqueeze(1), flat, w_up.transpose(1, 2)))
        out = torch.baddbmm(b_dn.unsqueeze(1), a, w_dn.transpose(1, 2)).mean(dim=0)
        return out.view(h.shape)


class TemporalBlock(nn.Module):
    """Pre-LN block (spec 2.2): u + MHA(LN1 u), then u + FFN(LN2 u); no dropout."""

    def __init__(self, dim: int, heads: int, n: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = ExpertFFN(dim, n)
        self.ln_2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, u: Tensor, choice: ExpertChoice) -> Tensor:
        # u: (B, T, D)
        h = self.ln_1(u)
        u = u + self.attn(h, h, h, need_weights=False)[0]
        return u + self.mlp(self.ln_2(u), choice)


class TemporalTransformer(nn.Module):
    """L blocks; no final LayerNorm, no output projection (spec 2.2)."""

    def __init__(self, dim: int, heads: int, layers: int, n: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(TemporalBlock(dim, heads, n) for _ in range(layers))

    def forward(self, u: Tensor, choices: Sequence[ExpertChoice]) -> Tensor:
        for block, choice in zip(self.resblocks, choices, strict=True):
            u = block(u, choice)
        return u
