"""CLIP mean pooling (spec 10.1): no temporal module; the frame features are averaged as they
come, so only the logit scale trains."""

from __future__ import annotations

from typing import ClassVar

from mote.pipeline.temporal.arch_names import MEANPOOL
from mote.pipeline.temporal.architectures.base import Architecture, register


@register
class MeanPoolArch(Architecture):
    name = MEANPOOL
    pools_only: ClassVar[bool] = True
