"""What a temporal architecture is, and the registry that finds one by name (timm / open_clip
style: each architecture's module registers its class once with ``@register``).

The base class is the plainest architecture: no temporal module, nothing routed, CE only.
Subclasses say what they build and support by overriding the class attributes and methods;
the model, the fused step, the run labels and the commands ask these instead of comparing names.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from torch import nn

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.arch_names import ARCH_NAMES
from mote.pipeline.temporal.temporal_config import MoTEConfig

# The scale every architecture holds and trains in the "clip" group (spec 7).
LOGIT_SCALE = "logit_scale"


class Architecture:
    """One temporal architecture: its settings, parts, parameter groups and capabilities."""

    name: ClassVar[str] = ""
    # The MoTEConfig switches it reads (a run label shows these when they differ from the
    # defaults); every other switch is stored with the run but changes nothing.
    settings: ClassVar[tuple[str, ...]] = ("logit_scale_init",)
    # No temporal module: the frames are pooled as they come (so no TFM, no parameters).
    pools_only: ClassVar[bool] = False
    # N experts per layer, drawn per micro-batch in training (spec 3.1).
    routes_experts: ClassVar[bool] = False
    # The WMR and MSE terms of spec 4.4 apply; without them it trains with CE only (spec 10.1).
    wmr_mse_losses: ClassVar[bool] = False
    # The ``inference`` values it follows; the first is what it does for any other value.
    inference_modes: ClassVar[tuple[str, ...]] = ("merge",)

    @property
    def uses_tfm(self) -> bool:
        """Whether TFM's rho modulates a temporal stream (spec 5); pooling alone has none."""
        return not self.pools_only

    def n_experts(self, cfg: MoTEConfig) -> int:
        """FFNs built per layer."""
        return 1

    def inference(self, cfg: MoTEConfig) -> str:
        """The test-time rule it applies for ``cfg.inference`` (Table 2c)."""
        modes = self.inference_modes
        return cfg.inference if cfg.inference in modes else modes[0]

    def unrouted_experts_possible(self, cfg: MoTEConfig) -> bool:
        """Whether a per-micro-batch step can leave an expert without a gradient (pitfall 12)."""
        return False

    def build(self, cfg: MoTEConfig) -> dict[str, nn.Module]:
        """The temporal parts, by attribute (and state dict) name, made in this order."""
        return {}

    def init_weights(self, model: nn.Module) -> None:
        """Spec 2.6 on the parts ``build`` made (``model`` holds them and ``cfg``)."""

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Spec 7: the temporal parameters (at lr) and the logit scale (the "clip" group)."""
        temporal = [p for name, p in model.named_parameters() if name != LOGIT_SCALE]
        return temporal, [getattr(model, LOGIT_SCALE)]


A = TypeVar("A", bound=type[Architecture])
_REGISTRY: dict[str, Architecture] = {}


def register(cls: A) -> A:
    """Class decorator: one instance of ``cls`` under ``cls.name`` (listed in arch_names.py)."""
    if cls.name not in ARCH_NAMES:
        raise ValueError(f"{cls.__name__}.name={cls.name!r} is not listed in arch_names.py")
    if cls.name in _REGISTRY:
        raise ValueError(f"architecture {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown temporal architecture {name!r}; one of {list(architecture_names())}"
        )
    return _REGISTRY[name]


def architecture_names() -> tuple[str, ...]:
    """Every registered name, in arch_names.py's (help) order."""
    return tuple(sorted(_REGISTRY, key=ARCH_NAMES.index))
