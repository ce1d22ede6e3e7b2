"""The Text4Vis baseline (spec 10.1): the same blocks with one FFN per layer, CE only."""

from __future__ import annotations

from mote.pipeline.temporal.arch_names import TRANSFORMER
from mote.pipeline.temporal.architectures.base import register
from mote.pipeline.temporal.architectures.stack import TemporalStack


@register
class TransformerArch(TemporalStack):
    name = TRANSFORMER
