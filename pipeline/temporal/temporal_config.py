"""The MoTE temporal module's settings (spec 2.1 sizes, the ablation switches of spec 10): one
frozen dataclass whose fields are also training options (``switch``), read by the model, the
training commands and the run config."""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.arch_names import ARCH_NAMES, DEFAULT_ARCH, arch_help

ROUTINGS = ("multinomial", "uniform", "fixed", "all")
EXPERT_INITS = ("different", "same")
INFERENCES = ("merge", "ensemble", "random")
WMR_TEMPERATURES = ("discrete", "point", "normal", "uniform")
WMR_LOSSES = ("ce", "kl", "mse")
# Spec 2.1 sizes by embedding width D: (heads, layers); other widths: D // 64 heads, 4 layers.
WIDTH_SIZES = {512: (8, 4), 768: (12, 6)}


def width_default_text(name: str) -> str:
    """How ``default_config`` picks ``heads`` or ``layers``, as help text ('8 for D=512, ...')."""
    index = {"heads": 0, "layers": 1}[name]
    known = ", ".join(f"{sizes[index]} for D={dim}" for dim, sizes in WIDTH_SIZES.items())
    return f"{known}, else {'D // 64' if name == 'heads' else 4}"


# Bounds past which a setting can only be nonsense. A loss weight w scales every gradient by w
# and AdamW's float32 second moment by w**2 (3.4e38 at most: gradients of 1.8e19), so 1e4 leaves
# 15 orders of magnitude to the gradients themselves. A WMR beta above 1e4 moves every merge
# coefficient softmax(i / tau), |tau| >= beta, less than 0.1% from uniform (tau = +inf) for
# N <= 10 experts: nothing is left to regularise.
LOSS_WEIGHT_MAX = 1e4
BETA_MAX = 1e4


def switch(default: Any = MISSING, help: str = "", **meta: Any) -> Any:
    """A MoTEConfig field that is also a training option: ``help`` makes it a
    ``train-temporal`` flag, a ``--config`` key and a ``config.json`` entry (stages/options.py)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class MoTEConfig:
    """Every architecture and ablation switch of spec sections 2-5 and 10.

    Fields made with ``switch(help=...)`` are ``train-temporal`` options; fields without help
    (D, the positional table, the logit-scale start) come from the store or the spec.
    """

    dim: int  # D, the CLIP joint embedding width of the features
    heads: int = switch(
        help="Attention heads.", default_text=lambda: width_default_text("heads"), min=1
    )  # spec 2.1: D // 64; at least 1
    layers: int = switch(
        help="Temporal layers L.", default_text=lambda: width_default_text("layers"), min=1
    )
    arch: str = switch(DEFAULT_ARCH, arch_help())  # architectures/: what each one builds
    experts: int = switch(4, "Experts per layer N (arch mote).", min=1)
    context: int = 77  # rows of the positional table (spec 2.3)
    routing: str = switch(
        "multinomial", "Training routing (spec 3.1, Table 2d/2a): multinomial, uniform, fixed, all."
    )
    expert_init: str = switch("different", "different or same (Table 2a).")
    inference: str = switch("merge", "Test-time experts (Table 2c): merge, ensemble, random.")
    wmr: bool = switch(True, "Weight Merging Regularization pass (spec 4).")
    wmr_beta: float = switch(
        0.6,
        f"WMR temperature base beta (spec 4.1), at most {BETA_MAX:g}: a larger one makes every "
        "temperature's merge the uniform one (tau = +inf), a WMR that regularises nothing.",
        above=0,
        max=BETA_MAX,
    )
    wmr_temperatures: str = switch(
        "discrete",
        "discrete (spec 4.1 set), point (always +inf), normal, uniform (Tables 2e, 7f).",
    )
    wmr_loss: str = switch("ce", "ce, kl or mse (Table 7c).")
    mse: bool = switch(True, "The MSE term of spec 4.4.")
    loss_weights: tuple[float, float, float] = switch(
        (1.0, 0.5, 0.1),
        f"CE,WMR,MSE weights, each 0 to {LOSS_WEIGHT_MAX:g}: AdamW squares each gradient in "
        "float32 (largest 3.4e38), and a weight much above the spec's makes that square "
        "infinite, so the weights stop moving.",
        min=0,
        max=LOSS_WEIGHT_MAX,
    )
    tfm_k: int = switch(5, "TFM neighbours K (spec 5, Table 7b).", min=1)
    tfm_gamma: float = switch(0.05, "TFM gamma (spec 5, Table 2f).", above=0)
    logit_scale_init: float = math.log(100)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
        choices = {
            "arch": ARCH_NAMES,
            "routing": ROUTINGS,
            "expert_init": EXPERT_INITS,
            "inference": INFERENCES,
            "wmr_temperatures": WMR_TEMPERATURES,
            "wmr_loss": WMR_LOSSES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"model config {name}={getattr(self, name)!r} is not one of {list(allowed)}"
                )
        for name in ("dim", "heads", "layers", "experts", "context", "tfm_k"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model config {name}={getattr(self, name)} must be >= 1")
        if self.dim % self.heads:
            raise ConfigError(
                f"model config heads={self.heads} does not divide dim={self.dim}; pick a divisor"
            )
        if self.wmr_beta <= 0 or self.tfm_gamma <= 0:
            raise ConfigError(
                f"model config wmr_beta={self.wmr_beta} and tfm_gamma={self.tfm_gamma} "
                "must be positive"
            )
        if len(self.loss_weights) != 3:
            raise ConfigError(
                f"model config loss_weights={self.loss_weights} needs 3 values (CE, WMR, MSE)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MoTEConfig:
        """Rebuild from ``dataclasses.asdict`` output read back from JSON (lists become the
        tuples the dataclass holds); unknown keys raise (a newer mote wrote them)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"model config has unknown keys {unknown}; a newer mote wrote it? "
                f"valid: {sorted(names)}"
            )
        values = {
            name: tuple(value)
            if typing.get_origin(hints[name]) is tuple and isinstance(value, list)
            else value
            for name, value in data.items()
        }
        return cls(**values)


def default_config(dim: int, **overrides: Any) -> MoTEConfig:
    """Spec 2.1 sizes by width: 512 -> 8 heads x 4 layers, 768 -> 12 x 6, else D//64 x 4.

    For other widths the head count is the largest divisor of D not above max(1, D // 64).
    """
    heads, layers = WIDTH_SIZES.get(dim, (max(1, dim // 64), 4))
    while dim % heads:
        heads -= 1
    return MoTEConfig(**{"dim": dim, "heads": heads, "layers": layers, **overrides})
