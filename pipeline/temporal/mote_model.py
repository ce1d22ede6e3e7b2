"""The MoTE temporal module (spec sections 2-5): one file, a config dataclass, no I/O.

Shapes: B batch (views), T frames, D embedding width, L layers, N experts per layer, C classes.
Parameter names mirror the reference checkpoint (spec 14), so importing one is a plain copy:

    frame_position_embeddings.weight                     [77, D]
    transformer.resblocks.{l}.attn.in_proj_weight/_bias  [3D, D] / [3D]
    transformer.resblocks.{l}.attn.out_proj.weight/.bias [D, D] / [D]
    transformer.resblocks.{l}.ln_1.* / ln_2.*            [D]
    transformer.resblocks.{l}.mlp.fc_up.{i}.weight/.bias [4D, D] / [4D]   expert i (0-based)
    transformer.resblocks.{l}.mlp.fc_dn.{i}.weight/.bias [D, 4D] / [D]
    transformer.resblocks.{l}.mlp.mote_fusion_weight     [N] frozen zeros (buffer)
    logit_scale []  and  finetune_text [C_ft, D] (buffer; the reference's spe_cls_feature)

Expert i in code is expert i+1 in the spec's 1-based formulas (routing softmax([1..N]), WMR i/tau).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mote.pipeline.errors import ConfigError

ARCHS = ("mote", "transformer", "meanpool")
ROUTINGS = ("multinomial", "uniform", "fixed", "all")
EXPERT_INITS = ("different", "same")
INFERENCES = ("merge", "ensemble", "random")
WMR_TEMPERATURES = ("discrete", "point", "normal", "uniform")
WMR_LOSSES = ("ce", "kl", "mse")
MODES = ("auto", "routed", "wmr", "merged", "expert")
LN_EPS = 1e-12  # spec 2.2: TF-style LayerNorm, not PyTorch's 1e-5
INIT_STD = 0.02  # spec 2.6
MIN_ABS_TAU = 1e-6  # a continuous draw of exactly 0 would make i/tau infinite for every i

# What one layer's FFN runs: an expert index, merge coefficients (N,), or "all" experts averaged.
ExpertChoice = int | Tensor | Literal["all"]


# Spec 2.1 sizes by embedding width D: (heads, layers); other widths: D // 64 heads, 4 layers.
WIDTH_SIZES = {512: (8, 4), 768: (12, 6)}


def width_default_text(name: str) -> str:
    """How ``default_config`` picks ``heads`` or ``layers``, as help text ('8 for D=512, ...')."""
    index = {"heads": 0, "layers": 1}[name]
    known = ", ".join(f"{sizes[index]} for D={dim}" for dim, sizes in WIDTH_SIZES.items())
    return f"{known}, else {'D // 64' if name == 'heads' else 4}"


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
        help="Attention heads.", default_text=lambda: width_default_text("heads")
    )  # spec 2.1: D // 64; at least 1
    layers: int = switch(
        help="Temporal layers L.", default_text=lambda: width_default_text("layers")
    )
    arch: str = switch(
        "mote",
        "mote, transformer (Text4Vis baseline: one FFN per layer, CE only) or "
        "meanpool (CLIP mean pooling).",
    )
    experts: int = switch(4, "Experts per layer N (arch mote).")
    context: int = 77  # rows of the positional table (spec 2.3)
    routing: str = switch(
        "multinomial", "Training routing (spec 3.1, Table 2d/2a): multinomial, uniform, fixed, all."
    )
    expert_init: str = switch("different", "different or same (Table 2a).")
    inference: str = switch("merge", "Test-time experts (Table 2c): merge, ensemble, random.")
    wmr: bool = switch(True, "Weight Merging Regularization pass (spec 4).")
    wmr_beta: float = switch(0.6, "WMR temperature base beta (spec 4.1).")
    wmr_temperatures: str = switch(
        "discrete",
        "discrete (spec 4.1 set), point (always +inf), normal, uniform (Tables 2e, 7f).",
    )
    wmr_loss: str = switch("ce", "ce, kl or mse (Table 7c).")
    mse: bool = switch(True, "The MSE term of spec 4.4.")
    loss_weights: tuple[float, float, float] = switch((1.0, 0.5, 0.1), "CE,WMR,MSE weights.")
    tfm_k: int = switch(5, "TFM neighbours K (spec 5, Table 7b).")
    tfm_gamma: float = switch(0.05, "TFM gamma (spec 5, Table 2f).")
    logit_scale_init: float = math.log(100)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
        choices = {
            "arch": ARCHS,
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

    @property
    def n_experts(self) -> int:
        """Experts per layer actually built: N for MoTE, 1 for the single-FFN baseline."""
        return self.experts if self.arch == "mote" else 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoTEConfig:
        """Rebuild from ``dataclasses.asdict`` output (e.g. JSON); unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"model config has unknown keys {unknown}; valid: {sorted(names)}")
        return cls(**data)


def default_config(dim: int, **overrides: Any) -> MoTEConfig:
    """Spec 2.1 sizes by width: 512 -> 8 heads x 4 layers, 768 -> 12 x 6, else D//64 x 4.

    For other widths the head count is the largest divisor of D not above max(1, D // 64).
    """
    heads, layers = WIDTH_SIZES.get(dim, (max(1, dim // 64), 4))
    while dim % heads:
        heads -= 1
    return MoTEConfig(**{"dim": dim, "heads": heads, "layers": layers, **overrides})


# ---------------------------------------------------------------------------------------------
# Spec formulas (module level so the tests can check them against the spec's tables)


def routing_probabilities(n: int) -> Tensor:
    """Spec 3.1: p = softmax([1, 2, ..., N]); the last expert gets ~64%."""
    return torch.softmax(torch.arange(1, n + 1, dtype=torch.float64), dim=0).float()


def wmr_temperature_set(beta: float) -> tuple[float, ...]:
    """Spec 4.1: {+-2^n beta : n = 0..4} and +inf, 11 values in ascending order."""
    positive = [beta * 2.0**n for n in range(5)]
    return tuple([-t for t in reversed(positive)] + positive + [math.inf])


def wmr_coefficients(tau: float, n: int) -> Tensor:
    """Spec 4.2: w_i = softmax_i(i / tau), i = 1..N; exactly uniform at tau = +-inf."""
    if tau == 0:
        raise ConfigError("WMR temperature 0 is undefined (i / 0); use a non-zero tau")
    index = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.softmax(index / tau, dim=0).float()


def tfm_rho_from_similarity(m: Tensor | float, gamma: float) -> Tensor:
    """Spec 5 step 5: rho = exp(-(1 - m) / gamma); 1 at m = 1, -> 0 as m falls."""
    return torch.exp(-(1.0 - torch.as_tensor(m, dtype=torch.float32)) / gamma)


@functools.cache
def _routing_table(routing: str, n: int) -> Tensor:
    """The probabilities a routed draw samples from (cached: the same tensor every draw)."""
    return routing_probabilities(n) if routing == "multinomial" else torch.full((n,), 1.0 / n)


def expert_draw(
    routing: str, n: int, layers: int, generator: torch.Generator | None = None
) -> Tensor:
    """``sample_experts`` as an int64 tensor (layers,): the same generator calls."""
    if routing == "fixed":
        return torch.full((layers,), n - 1, dtype=torch.int64)
    return torch.multinomial(
        _routing_table(routing, n), layers, replacement=True, generator=generator
    )


def sample_experts(
    routing: str, n: int, layers: int, generator: torch.Generator | None = None
) -> list[int]:
    """One expert index per layer for a routed pass (spec 3.1), shared by the whole batch."""
    return expert_draw(routing, n, layers, generator).tolist()


@functools.cache
def _temperature_table(beta: float) -> Tensor:
    return torch.tensor(wmr_temperature_set(beta), dtype=torch.float64)


def temperature_draw(
    scheme: str, beta: float, layers: int, generator: torch.Generator | None = None
) -> Tensor:
    """``sample_temperatures`` as a float64 tensor (layers,): the same generator calls."""
    if scheme == "point":
        return torch.full((layers,), math.inf, dtype=torch.float64)
    if scheme == "discrete":
        table = _temperature_table(beta)
        return table[torch.randint(len(table), (layers,), generator=generator)]
    if scheme == "normal":
        raw = torch.randn(layers, generator=generator, dtype=torch.float64)
    else:
        span = 16.0 * beta
        raw = (torch.rand(layers, generator=generator, dtype=torch.float64) * 2 - 1) * span
    return torch.copysign(raw.abs().clamp_min(MIN_ABS_TAU), raw)


def sample_temperatures(
    scheme: str, beta: float, layers: int, generator: torch.Generator | None = None
) -> list[float]:
    """One WMR temperature per layer (spec 4.1, Table 2e/7f).

    "discrete": uniform over the 11 values of ``wmr_temperature_set``; "point": always +inf;
    "normal": N(0, 1); "uniform": U(-16 beta, 16 beta), i.e. the discrete set's range.
    Continuous draws are kept at least 1e-6 away from 0.
    """
    return temperature_draw(scheme, beta, layers, generator).tolist()


def wmr_coefficient_rows(taus: Tensor, n: int) -> Tensor:
    """``wmr_coefficients`` for a whole tensor of temperatures: (...,) float64 -> (..., N)."""
    index = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.softmax(index / taus.to(torch.float64).unsqueeze(-1), dim=-1).float()


@dataclass(frozen=True)
class StepDraws:
    """The random draws of one training step of M micro-batches, as tensors (spec 3.1, 4.1).

    Made on the CPU by ``draw_step`` (so the CPU generators, and with them resume, stay exact)
    and handed to the device whole: the fused step sees no Python numbers, so its graph is
    static. Fields are None where the config makes no such draw.
    """

    micro_batches: int
    experts: Tensor | None = None  # (M, L) int64 routed expert; None: routing "all" or no MoTE
    temperatures: Tensor | None = None  # (M, L) float64 WMR tau (inf allowed); None: no WMR
    routed: Tensor | None = None  # (M, L, N) float32 one-hot of ``experts``
    merge: Tensor | None = None  # (M, L, N) float32 WMR coefficients softmax(i / tau)

    def to(self, device: torch.device | str) -> StepDraws:
        """The same draws on ``device``. To CUDA they go through pinned memory: a copy from
        pageable memory would make the host wait for the GPU, every step."""
        device = torch.device(device)
        pin = device.type == "cuda"

        def move(t: Tensor | None) -> Tensor | None:
            if t is None or t.device == device:
                return t
            return (t.pin_memory() if pin else t).to(device, non_blocking=True)

        return StepDraws(
            self.micro_batches,
            move(self.experts),
            move(self.temperatures),
            move(self.routed),
            move(self.merge),
        )

    def select(self, start: int, stop: int) -> StepDraws:
        """The draws of micro-batches ``start:stop`` (a rank's share of the world's draws)."""

        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return StepDraws(
            stop - start, rows(self.experts), rows(self.temperatures), rows(self.routed),
            rows(self.merge),
        )  # fmt: skip

    def routed_experts(self) -> list[set[int]] | None:
        """Per layer, the experts some micro-batch routed to; None when every expert takes
        part (WMR merges them all, or routing "all", or no MoTE). Read on the host."""
        if self.experts is None or self.merge is not None:
            return None
        return [set(column) for column in self.experts.t().tolist()]


def draw_step(
    generator: torch.Generator | Sequence[torch.Generator | None] | None,
    micro_batches: int,
    cfg: MoTEConfig,
) -> StepDraws:
    """The draws the per-micro-batch loop makes for ``micro_batches`` micro-batches, in its order.

    Micro-batch j draws its routed experts, then its WMR temperatures (what
    ``training_losses`` draws), from ``generator`` (one generator shared in order j = 0..M-1)
    or from ``generator[j]`` (a list: one generator per micro-batch slot). None is the global
    generator. The transformer and meanpool baselines draw nothing.
    """
    if micro_batches < 1:
        raise ConfigError(f"draw_step needs at least 1 micro-batch, got {micro_batches}")
    if isinstance(generator, Sequence):
        gens = list(generator)
        if len(gens) != micro_batches:
            raise ConfigError(
                f"draw_step got {len(gens)} generators for {micro_batches} micro-batches; "
                "give one generator per micro-batch or a single shared one"
            )
    else:
        gens = [generator] * micro_batches
    if cfg.arch != "mote":
        return StepDraws(micro_batches)
    experts: list[Tensor] = []
    taus: list[Tensor] = []
    for gen in gens:
        if cfg.routing != "all":
            experts.append(expert_draw(cfg.routing, cfg.experts, cfg.layers, gen))
        if cfg.wmr:
            taus.append(temperature_draw(cfg.wmr_temperatures, cfg.wmr_beta, cfg.layers, gen))
    expert_t = torch.stack(experts) if experts else None
    tau_t = torch.stack(taus) if taus else None
    return StepDraws(
        micro_batches,
        expert_t,
        tau_t,
        None if expert_t is None else F.one_hot(expert_t, cfg.experts).float(),
        None if tau_t is None else wmr_coefficient_rows(tau_t, cfg.experts),
    )


def micro_batch_sizes(batch: int, micro_batches: int) -> list[int]:
    """Sizes of the micro-batches a batch splits into (``tensor_split``: larger ones first)."""
    parts = min(micro_batches, batch)
    base, extra = divmod(batch, parts)
    return [base + (j < extra) for j in range(parts)]


@dataclass(frozen=True)
class MicroBatchGroups:
    """A batch as M equal micro-batch groups: e (M, b, T, D), labels (M, b), valid (M, b) row
    weights (None when every micro-batch is full) and ``order``, the grouped rows of the batch
    order (None when grouping kept it)."""

    e: Tensor
    labels: Tensor
    valid: Tensor | None = None
    order: Tensor | None = None

    def restore_order(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """``out`` with its per-row "logits" back in batch order."""
        if self.order is None:
            return out
        return {**out, "logits": out["logits"][self.order]}


@functools.lru_cache(maxsize=64)
def _uneven_layout(
    batch: int, micro_batches: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, valid, order) of an uneven batch on ``device``, built once per shape: the last
    batch of every epoch reuses them instead of copying lists to the GPU each time."""
    parts = micro_batch_sizes(batch, micro_batches)
    b = parts[0]
    rows, keep, start = [], [], 0
    for n in parts:  # pad each micro-batch to b with copies of its first row, weighted 0
        rows += list(range(start, start + n)) + [start] * (b - n)
        keep += [float(i < n) for i in range(b)]
        start += n
    order = [m * b + i for m, n in enumerate(parts) for i in range(n)]
    return (
        torch.tensor(rows).to(device),
        torch.tensor(keep, dtype=dtype).view(micro_batches, b).to(device),
        torch.tensor(order).to(device),
    )


def group_micro_batches(e: Tensor, labels: Tensor, micro_batches: int) -> MicroBatchGroups:
    """Split a batch as the per-micro-batch loop does (``micro_batch_sizes``) into equal groups.

    e (M, b, T, D) with labels (M, b) is taken as grouped already; e (B, T, D) with labels (B,)
    is viewed as (M, b, ...) when B = M b, else padded (``_uneven_layout``)."""
    if e.ndim == 4:
        if e.shape[0] != micro_batches or labels.shape != e.shape[:2]:
            raise ConfigError(
                f"fused features {tuple(e.shape)} / labels {tuple(labels.shape)} do not "
                f"hold {micro_batches} micro-batches as (M, b, T, D) / (M, b)"
            )
        return MicroBatchGroups(e, labels)
    batch = e.shape[0]
    parts = micro_batch_sizes(batch, micro_batches)
    if len(parts) != micro_batches:
        raise ConfigError(
            f"a batch of {batch} makes {len(parts)} micro-batches, but the draws are for "
            f"{micro_batches}; draw for min(micro_batches, batch)"
        )
    b = parts[0]
    if batch == b * micro_batches:
        return MicroBatchGroups(
            e.reshape(micro_batches, b, *e.shape[1:]), labels.reshape(micro_batches, b)
        )
    rows, valid, order = _uneven_layout(batch, micro_batches, e.device, e.dtype)
    return MicroBatchGroups(
        e[rows].view(micro_batches, b, *e.shape[1:]),
        labels[rows].view(micro_batches, b),
        valid,
        order,
    )


def quick_gelu(x: Tensor) -> Tensor:
    """a * sigmoid(1.702 a), as in OpenAI CLIP (spec 2.2)."""
    return x * torch.sigmoid(1.702 * x)


# ---------------------------------------------------------------------------------------------
# Modules


def _self_attention(attn: nn.MultiheadAttention, h: Tensor) -> Tensor:
    """``attn(h, h, h)[0]`` for batch-first h (R, T, D) with the same parameters and the same
    scaled-dot-product kernel, without the module's layout round trips (fewer operator calls)."""
    r, t, d = h.shape
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(r, t, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (R, H, T, D / H) each
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(r, t, d)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


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
            outs = [self._expert(h, i) for i in range(self.n)]
            return torch.stack(outs).mean(dim=0)
        return self._expert(h, choice)

    def _expert(self, h: Tensor, i: int) -> Tensor:
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


class MoTE(nn.Module):
    """Temporal module + cosine head + TFM + the training losses of spec 4.4."""

    def __init__(self, cfg: MoTEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.arch != "meanpool":
            self.frame_position_embeddings = nn.Embedding(cfg.context, cfg.dim)
            self.transformer = TemporalTransformer(cfg.dim, cfg.heads, cfg.layers, cfg.n_experts)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.register_buffer("finetune_text", torch.zeros(0, cfg.dim))
        self._init_weights()

    # -- construction --------------------------------------------------------------------------

    def _init_weights(self) -> None:
        """Spec 2.6. The attention in-projection keeps PyTorch's Xavier-uniform (from its ctor)."""
        if self.cfg.arch == "meanpool":
            return
        nn.init.normal_(self.frame_position_embeddings.weight, std=INIT_STD)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.out_proj.weight, std=INIT_STD)
            nn.init.zeros_(block.attn.out_proj.bias)
            for linear in [*block.mlp.fc_up, *block.mlp.fc_dn]:  # independent draw per expert
                nn.init.normal_(linear.weight, std=INIT_STD)
                nn.init.zeros_(linear.bias)
            if self.cfg.expert_init == "same":  # Table 2a: copies of expert 0's draw
                with torch.no_grad():
                    for layer in (block.mlp.fc_up, block.mlp.fc_dn):
                        for expert in layer[1:]:
                            expert.weight.copy_(layer[0].weight)

    def set_finetune_text(self, text: Tensor) -> None:
        """Store the fine-tuning class bank Y_ft (C_ft, D) that TFM needs, as unit rows."""
        if text.ndim != 2 or text.shape[1] != self.cfg.dim:
            raise ConfigError(
                f"fine-tune text bank has shape {tuple(text.shape)}; expected (classes, "
                f"{self.cfg.dim}) for this model"
            )
        device = self.logit_scale.device
        self.finetune_text = F.normalize(text.detach().float(), dim=-1).to(device)

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The text bank's row count comes from the file (400 for K400), so resize before copying.
        bank = state_dict.get(prefix + "finetune_text")
        if isinstance(bank, Tensor) and bank.ndim == 2:
            self.finetune_text = torch.zeros(
                bank.shape, dtype=torch.float32, device=self.finetune_text.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, e: Tensor, **kwargs: Any) -> Tensor:
        """Same as ``forward_features``."""
        return self.forward_features(e, **kwargs)

    def forward_features(
        self,
        e: Tensor,
        *,
        mode: str = "auto",
        experts: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
        rho: Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Frame outputs x = rho * s + e (spec 2.4) for raw CLIP frame features e (B, T, D).

        mode "routed": training routing (``experts`` forces one 0-based index per layer);
        "wmr": temperature-merged pass (``temperatures`` forces tau per layer, inf allowed);
        "merged": the cfg.inference rule ("ensemble" merges here too; ``predict`` ensembles);
        "expert": expert ``experts[l]`` in layer l, unmerged; "auto": routed when training,
        merged in eval. The meanpool arch returns e; the transformer arch ignores the mode.
        """
        if mode not in MODES:
            raise ConfigError(f"forward mode {mode!r} is not one of {list(MODES)}")
        if self.cfg.arch == "meanpool":
            return e
        b, t, d = e.shape
        if t > self.cfg.context or d != self.cfg.dim:
            raise ConfigError(
                f"features of shape {tuple(e.shape)} do not fit this model (at most "
                f"{self.cfg.context} frames of width {self.cfg.dim})"
            )
        if mode == "auto":
            mode = "routed" if self.training else "merged"
        choices = self._layer_choices(mode, experts, temperatures, generator)
        u = e + self.frame_position_embeddings.weight[:t]  # (B, T, D) + (T, D): spec 2.3
        s = self.transformer(u, choices)  # (B, T, D), the full stream (still holds e + P)
        if rho is None:
            return s + e
        if isinstance(rho, Tensor) and rho.ndim > 0:
            rho = rho.to(s).reshape(b, 1, 1)  # per-view TFM rho, (B,) -> (B, 1, 1)
        return rho * s + e  # spec 2.4: outer residual with the RAW features e

    def _layer_choices(
        self,
        mode: str,
        experts: Sequence[int] | None,
        temperatures: Sequence[float] | None,
        generator: torch.Generator | None,
    ) -> list[ExpertChoice]:
        """What each layer's FFN runs for this pass."""
        cfg, layers = self.cfg, self.cfg.layers
        if cfg.arch == "transformer":
            return [0] * layers
        if mode == "expert" or (mode == "routed" and experts is not None):
            return list(self._check_experts(experts))
        if mode == "routed":
            if cfg.routing == "all":
                return ["all"] * layers
            return list(sample_experts(cfg.routing, cfg.experts, layers, generator))
        if mode == "wmr":
            taus = temperatures
            if taus is None:
                taus = sample_temperatures(cfg.wmr_temperatures, cfg.wmr_beta, layers, generator)
            if len(taus) != layers:
                raise ConfigError(f"got {len(taus)} WMR temperatures for {layers} layers")
            return [wmr_coefficients(float(tau), cfg.experts) for tau in taus]
        if cfg.inference == "random":  # Table 2c: a uniformly random expert per layer, no merge
            return list(sample_experts("uniform", cfg.experts, layers, generator))
        return [block.mlp.merge_coefficients() for block in self.transformer.resblocks]

    def _check_experts(self, experts: Sequence[int] | None) -> Sequence[int]:
        n, layers = self.cfg.experts, self.cfg.layers
        if experts is None or len(experts) != layers or not all(0 <= k < n for k in experts):
            raise ConfigError(
                f"experts={experts}: give one 0-based expert index below {n} per layer "
                f"({layers} layers)"
            )
        return [int(k) for k in experts]

    # -- head and TFM --------------------------------------------------------------------------

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        """(B, T, D) -> (B, D): mean over frames, no normalisation (spec 2.4)."""
        return x.mean(dim=1)

    @staticmethod
    def cosine_logits(z: Tensor, text: Tensor) -> Tensor:
        """(B, D), (C, D) -> (B, C) plain cosines; text rows are taken as already unit-norm."""
        return F.normalize(z, dim=-1) @ text.to(z).t()

    def tfm_rho(self, e: Tensor, text: Tensor) -> Tensor:
        """Spec 5: per-view rho (B,) from how close the test classes near a view are to the
        fine-tuning classes near it. K is capped at the smaller bank's size."""
        bank = self.finetune_text
        if bank.shape[0] == 0:
            raise ConfigError(
                "TFM needs the fine-tuning class text bank (K400 for the paper), which this "
                "model does not hold; load a run that stores finetune_text, or turn TFM off"
            )
        bank, text = bank.to(e), text.to(e)  # same device and dtype as the features
        q = F.normalize(e.mean(dim=1), dim=-1)  # (B, D), the spatial query
        k = min(self.cfg.tfm_k, text.shape[0], bank.shape[0])
        y_t = text[(q @ text.t()).topk(k, dim=-1).indices]  # (B, K, D) test proxies
        y_f = bank[(q @ bank.t()).topk(k, dim=-1).indices]  # (B, K, D) fine-tune proxies
        sim = y_t @ y_f.transpose(1, 2)  # (B, K, K)
        m = sim.max(dim=-1).values.mean(dim=-1)  # (B,): best fine-tune match, mean over K
        return tfm_rho_from_similarity(m.float(), self.cfg.tfm_gamma).to(e.dtype)

    def predict(
        self,
        e: Tensor,
        text: Tensor,
        tfm: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Evaluation: cosine logits (B, C) (no scale, spec 8) and rho (B,).

        Follows cfg.inference: "merge" one merged pass; "ensemble" the mean over experts of
        each expert's cosines; "random" a random expert per layer (``generator``). The
        meanpool arch has no stream to modulate, so its rho is all ones.
        """
        ones = torch.ones(e.shape[0], dtype=e.dtype, device=e.device)
        rho = self.tfm_rho(e, text) if tfm and self.cfg.arch != "meanpool" else ones
        if self.cfg.arch == "mote" and self.cfg.inference == "ensemble":
            logits = [
                self.cosine_logits(
                    self.pool(
                        self.forward_features(
                            e, mode="expert", experts=[i] * self.cfg.layers, rho=rho
                        )
                    ),
                    text,
                )
                for i in range(self.cfg.experts)
            ]
            return torch.stack(logits).mean(dim=0), rho
        x = self.forward_features(e, mode="merged", rho=rho, generator=generator)
        return self.cosine_logits(self.pool(x), text), rho

    # -- training ------------------------------------------------------------------------------

    def training_losses(
        self,
        e: Tensor,
        labels: Tensor,
        text: Tensor,
        generator: torch.Generator | None = None,
        *,
        experts: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
    ) -> dict[str, Tensor]:
        """Spec 4.4: CE(sigma cos) + 0.5 WMR + 0.1 mean((x_r - e)^2), as a dict of terms.

        Keys "total", "ce", "wmr", "mse" (switched-off terms are 0) and "logits" (the routed
        pass's cosines, for accuracy). The transformer and meanpool baselines train with CE
        only (spec 10.1), whatever cfg.wmr and cfg.mse say. ``experts`` / ``temperatures``
        force the routed / WMR draws (tests, Figure-3 style studies).
        """
        cfg = self.cfg
        sigma = self.logit_scale.exp()
        zero = e.new_zeros(())
        x = self.forward_features(e, mode="routed", experts=experts, generator=generator)
        logits = self.cosine_logits(self.pool(x), text)  # (B, C)
        ce = F.cross_entropy(sigma * logits, labels)
        wmr, mse = zero, zero
        if cfg.arch == "mote":
            x_mse = x
            if cfg.wmr:
                x_r = self.forward_features(
                    e, mode="wmr", temperatures=temperatures, generator=generator
                )  # rho = 1 (spec 4.3)
                wmr = self._wmr_term(x_r, x, logits, labels, text, sigma)
                x_mse = x_r
            if cfg.mse:
                mse = (x_mse - e).pow(2).mean()  # frame level, e not detached (spec 4.4, 12)
        w_ce, w_wmr, w_mse = cfg.loss_weights
        total = w_ce * ce + w_wmr * wmr + w_mse * mse
        return {"total": total, "ce": ce, "wmr": wmr, "mse": mse, "logits": logits}

    def training_losses_fused(
        self, e: Tensor, labels: Tensor, text: Tensor, draws: StepDraws
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
        out = self.training_losses_grouped(group.e, group.labels, group.valid, text, draws)
        return group.restore_order(out)

    def training_losses_grouped(
        self, eg: Tensor, yg: Tensor, valid: Tensor | None, text: Tensor, draws: StepDraws
    ) -> dict[str, Tensor]:
        """``training_losses_fused`` on a batch grouped by ``group_micro_batches``: eg
        (M, b, T, D), yg (M, b), valid (M, b) row weights (None: every row counts). Tensors in,
        fixed shapes: this is what ``torch.compile`` captures. "logits" (M b, C) come back in
        grouped order."""
        cfg = self.cfg
        m, b, t, d = eg.shape
        if cfg.arch != "meanpool" and (t > cfg.context or d != cfg.dim):
            raise ConfigError(
                f"features of shape {tuple(eg.shape)} do not fit this model (at most "
                f"{cfg.context} frames of width {cfg.dim})"
            )
        sizes = eg.new_full((m,), b) if valid is None else valid.sum(dim=1)

        def per_micro_batch(v: Tensor) -> Tensor:  # (M, b) per-sample values -> (M,) means
            return v.mean(dim=1) if valid is None else (v * valid).sum(dim=1) / sizes

        sigma = self.logit_scale.exp()
        flat_y = yg.reshape(m * b)
        x_r = None
        if cfg.arch == "meanpool":
            x = eg
        elif cfg.arch == "transformer":
            u = eg.reshape(m * b, t, d) + self.frame_position_embeddings.weight[:t]
            blocks = self.transformer.resblocks
            x = self._stream(u, lambda i, h: blocks[i].mlp._expert(h, 0)).view(m, b, t, d) + eg
        else:
            x, x_r = self._fused_streams(eg, draws)
        logits = self.cosine_logits(self.pool(x.reshape(m * b, t, d)), text)  # (Mb, C)
        ce = per_micro_batch(F.cross_entropy(sigma * logits, flat_y, reduction="none").view(m, b))
        wmr = mse = ce.new_zeros(m)
        if x_r is not None:
            wmr = per_micro_batch(self._wmr_term_per_sample(x_r, x, logits, flat_y, text, sigma))
        if cfg.arch == "mote" and cfg.mse:
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

    def _fused_streams(self, eg: Tensor, draws: StepDraws) -> tuple[Tensor, Tensor | None]:
        """Routed frame outputs x and WMR outputs x_r (None without WMR), both (M, b, T, D)."""
        cfg = self.cfg
        m, b, t, d = eg.shape
        if cfg.routing != "all" and draws.routed is None:
            raise ConfigError(f"draws hold no routed experts for routing={cfg.routing!r}")
        if cfg.wmr and draws.merge is None:
            raise ConfigError("draws hold no WMR coefficients, but the config has WMR on")
        u = eg + self.frame_position_embeddings.weight[:t]  # (M, b, T, D)
        blocks = self.transformer.resblocks
        if cfg.routing == "all":  # every micro-batch runs the same FFNs: one flat pass
            x = self._stream(u.reshape(m * b, t, d), lambda i, h: blocks[i].mlp.all_experts(h))
            x = x.view(m, b, t, d) + eg
            if not cfg.wmr:
                return x, None
            merged = self._merged_ffns(draws.merge.to(eg.device))
            x_r = self._stream(
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
        merged = self._merged_ffns(coeffs)
        s = self._stream(
            u.reshape(groups * b, t, d),
            lambda i, h: ExpertFFN.grouped(h.view(groups, b * t, d), *merged[i]),
        ).view(groups, b, t, d)
        if not cfg.wmr:
            return s + eg, None
        return s[:m] + eg, s[m:] + eg

    def _merged_ffns(self, coeffs: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """phi = sum_i c_i theta_i (spec 4.3) for every group and layer at once: coeffs
        (G, L, N) -> per layer (W_up (G, 4D, D), b_up (G, 4D), W_dn (G, D, 4D), b_dn (G, D)).
        A one-hot row gives exactly that expert (1 * w + 0 * w' = w), so routed passes are
        merges too. Merged in fp32 under autocast, as ``merged_weights`` does.

        The layers come apart with ``unbind``: its backward stacks the L gradients once,
        where indexing ``w[i]`` per layer would make each layer's backward allocate and
        zero-fill the whole (L, G, ...) tensor (about 2.5 GB of traffic per step at D=512)."""
        g, layers, n = coeffs.shape
        mlps = [block.mlp for block in self.transformer.resblocks]

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

    def _stream(self, u: Tensor, ffn: Any) -> Tensor:
        """The blocks of spec 2.2 on u (R, T, D), with ``ffn(layer, ln_2(u))`` as the FFN."""
        r, t, d = u.shape
        for i, block in enumerate(self.transformer.resblocks):
            u = u + _self_attention(block.attn, block.ln_1(u))
            u = u + ffn(i, block.ln_2(u)).reshape(r, t, d)
        return u

    def _wmr_term_per_sample(
        self, x_r: Tensor, x: Tensor, logits: Tensor, labels: Tensor, text: Tensor, sigma: Tensor
    ) -> Tensor:
        """``_wmr_term`` before its batch mean: (M, b) per-sample values."""
        m, b = x_r.shape[:2]
        kind = self.cfg.wmr_loss
        if kind == "mse":
            return (x_r - x.detach()).pow(2).mean(dim=(2, 3))
        logits_r = sigma * self.cosine_logits(self.pool(x_r.flatten(0, 1)), text)
        if kind == "ce":
            return F.cross_entropy(logits_r, labels, reduction="none").view(m, b)
        target = F.softmax((sigma * logits).detach(), dim=-1)
        kl = F.kl_div(F.log_softmax(logits_r, dim=-1), target, reduction="none")
        return kl.sum(dim=-1).view(m, b)

    def _wmr_term(
        self, x_r: Tensor, x: Tensor, logits: Tensor, labels: Tensor, text: Tensor, sigma: Tensor
    ) -> Tensor:
        """Table 7c. "ce": CE with labels. "kl": KL(p_routed || p_wmr), both softmaxes of the
        sigma-scaled cosines at temperature 1, routed target detached, batch mean. "mse": mean
        squared distance to the routed pass's frame features (detached)."""
        kind = self.cfg.wmr_loss
        if kind == "mse":
            return (x_r - x.detach()).pow(2).mean()
        logits_r = sigma * self.cosine_logits(self.pool(x_r), text)
        if kind == "ce":
            return F.cross_entropy(logits_r, labels)
        target = F.softmax((sigma * logits).detach(), dim=-1)
        return F.kl_div(F.log_softmax(logits_r, dim=-1), target, reduction="batchmean")

    # -- deployment ----------------------------------------------------------------------------

    def merged_state_dict(self) -> dict[str, Tensor]:
        """The deployable single-FFN module (spec 3.2, 11.4): experts replaced by their
        uniform average, named like the reference's baseline (``mlp.c_fc`` / ``mlp.c_proj``).
        Holds the temporal module only (no logit_scale, text bank or fusion vectors)."""
        if self.cfg.arch == "meanpool":
            return {}
        out: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                if name.startswith(("frame_position_embeddings.", "transformer.")) and (
                    ".mlp." not in name
                ):
                    out[name] = tensor.detach().clone()
            for index, block in enumerate(self.transformer.resblocks):
                coeffs = block.mlp.merge_coefficients()
                w_up, b_up, w_dn, b_dn = block.mlp.merged_weights(coeffs)
                prefix = f"transformer.resblocks.{index}.mlp."
                out[prefix + "c_fc.weight"], out[prefix + "c_fc.bias"] = w_up, b_up
                out[prefix + "c_proj.weight"], out[prefix + "c_proj.bias"] = w_dn, b_dn
        return out

    def num_params(self, merged: bool) -> int:
        """Spec 11.4: merged L(12D^2 + 13D) + 77D; training counts every expert. The logit
        scale, text bank and fusion vectors are not counted."""
        if self.cfg.arch == "meanpool":
            return 0
        total = sum(p.numel() for n, p in self.named_parameters() if n != "logit_scale")
        if not merged:
            return total
        mlp = self.transformer.resblocks[0].mlp
        one_expert = sum(
            p.numel() for p in (*mlp.fc_up[0].parameters(), *mlp.fc_dn[0].parameters())
        )
        return total - (mlp.n - 1) * one_expert * self.cfg.layers
