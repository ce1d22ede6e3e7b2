"""MoTE's random draws (spec 3.1 routing, spec 4.1-4.2 WMR temperatures and coefficients): the
spec's formulas, one draw per layer for a pass, and ``draw_step``, every draw of a training step
made up front on the CPU generators so the fused step and resume stay exact."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.architectures import get_architecture
from mote.pipeline.temporal.temporal_config import MoTEConfig

MIN_ABS_TAU = 1e-6  # a continuous draw of exactly 0 would make i/tau infinite for every i


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
    return temperature_values(scheme, beta, temperature_sample(scheme, beta, layers, generator))


def temperature_values(scheme: str, beta: float, sample: Tensor) -> Tensor:
    """Temperatures from ``temperature_sample``'s draws (any leading shape): the "discrete"
    table is looked up once for a whole step's draws, not once per micro-batch."""
    return _temperature_table(beta)[sample] if scheme == "discrete" else sample


def temperature_sample(
    scheme: str, beta: float, layers: int, generator: torch.Generator | None = None
) -> Tensor:
    """``temperature_draw``'s generator calls: (layers,) table indices for "discrete", else
    the temperatures themselves."""
    if scheme == "point":
        return torch.full((layers,), math.inf, dtype=torch.float64)
    if scheme == "discrete":
        return torch.randint(len(_temperature_table(beta)), (layers,), generator=generator)
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
    generator. An architecture without routed experts (the baselines) draws nothing.
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
    if not get_architecture(cfg.arch).routes_experts:
        return StepDraws(micro_batches)
    experts: list[Tensor] = []
    taus: list[Tensor] = []
    for gen in gens:
        if cfg.routing != "all":
            experts.append(expert_draw(cfg.routing, cfg.experts, cfg.layers, gen))
        if cfg.wmr:
            taus.append(temperature_sample(cfg.wmr_temperatures, cfg.wmr_beta, cfg.layers, gen))
    expert_t = torch.stack(experts) if experts else None
    tau_t = None
    if taus:
        tau_t = temperature_values(cfg.wmr_temperatures, cfg.wmr_beta, torch.stack(taus))
    return StepDraws(
        micro_batches,
        expert_t,
        tau_t,
        None if expert_t is None else F.one_hot(expert_t, cfg.experts).float(),
        None if tau_t is None else wmr_coefficient_rows(tau_t, cfg.experts),
    )
