"""MoTE (spec 2-5): N experts per layer, routed in training, merged (or ensembled, or drawn) at
test time, trained with the WMR and MSE terms as well as CE."""

from __future__ import annotations

from typing import ClassVar

from mote.pipeline.temporal.arch_names import MOTE
from mote.pipeline.temporal.architectures.base import register
from mote.pipeline.temporal.architectures.stack import TemporalStack
from mote.pipeline.temporal.temporal_config import INFERENCES, MoTEConfig

# The switches only MoTE reads (spec 10.1: the baselines train with CE only).
MOTE_SWITCHES = (
    "experts",
    "routing",
    "expert_init",
    "inference",
    "wmr",
    "wmr_beta",
    "wmr_temperatures",
    "wmr_loss",
    "mse",
    "loss_weights",
)


@register
class MoTEArch(TemporalStack):
    name = MOTE
    settings: ClassVar[tuple[str, ...]] = TemporalStack.settings + MOTE_SWITCHES
    routes_experts = True
    wmr_mse_losses = True
    inference_modes: ClassVar[tuple[str, ...]] = INFERENCES

    def n_experts(self, cfg: MoTEConfig) -> int:
        return cfg.experts

    def unrouted_experts_possible(self, cfg: MoTEConfig) -> bool:
        """Routed experts without WMR: an expert no micro-batch drew gets no gradient."""
        return not cfg.wmr and cfg.routing != "all"
