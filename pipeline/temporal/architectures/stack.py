"""The architectures with a temporal module: a positional table and L pre-LN blocks (spec 2.2,
2.3), each block's FFN made of ``n_experts`` experts."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mote.pipeline.temporal.architectures.base import Architecture
from mote.pipeline.temporal.temporal_config import MoTEConfig
from mote.pipeline.temporal.temporal_layers import INIT_STD, TemporalTransformer


class TemporalStack(Architecture):
    """Shared by mote and the transformer baseline: the parts, their names and their init."""

    settings: ClassVar[tuple[str, ...]] = (
        "heads",
        "layers",
        "context",
        "tfm_k",
        "tfm_gamma",
        "logit_scale_init",
    )

    def build(self, cfg: MoTEConfig) -> dict[str, nn.Module]:
        return {
            "frame_position_embeddings": nn.Embedding(cfg.context, cfg.dim),
            "transformer": TemporalTransformer(cfg.dim, cfg.heads, cfg.layers, self.n_experts(cfg)),
        }

    def init_weights(self, model: nn.Module) -> None:
        """Spec 2.6. The attention in-projection keeps PyTorch's Xavier-uniform (from its ctor)."""
        nn.init.normal_(model.frame_position_embeddings.weight, std=INIT_STD)
        for block in model.transformer.resblocks:
            nn.init.normal_(block.attn.out_proj.weight, std=INIT_STD)
            nn.init.zeros_(block.attn.out_proj.bias)
            for linear in [*block.mlp.fc_up, *block.mlp.fc_dn]:  # independent draw per expert
                nn.init.normal_(linear.weight, std=INIT_STD)
                nn.init.zeros_(linear.bias)
            if model.cfg.expert_init == "same":  # Table 2a: copies of expert 0's draw
                with torch.no_grad():
                    for layer in (block.mlp.fc_up, block.mlp.fc_dn):
                        for expert in layer[1:]:
                            expert.weight.copy_(layer[0].weight)
