"""Every temporal module the switches can build, trained one step both ways (timm-style smoke).

For each registered architecture (a new one is picked up by itself), each MoTE routing x WMR x MSE
combination, and each WMR loss, temperature scheme, expert
init and inference mode on the default MoTE: the per-micro-batch losses and the production
fused step run forward and backward, every loss and gradient is finite, every trainable
parameter gets a gradient except the experts no micro-batch routed to (no WMR), and the
evaluation forward gives finite cosines. One place for the gradient check that three test files
used to copy.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from mote.pipeline.temporal.arch_names import ARCH_NAMES, MOTE
from mote.pipeline.temporal.architectures import architecture_names, get_architecture
from mote.pipeline.temporal.fused import adamw
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.routing import draw_step
from mote.pipeline.temporal.temporal_config import (
    EXPERT_INITS,
    INFERENCES,
    ROUTINGS,
    WMR_LOSSES,
    WMR_TEMPERATURES,
    MoTEConfig,
)
from mote.pipeline.train.step import LossModule, fused_step

D, HEADS, LAYERS, T, C, B, M = 32, 2, 2, 4, 5, 6, 2


def combinations() -> dict[str, dict]:
    cases = {name: {"arch": name} for name in architecture_names()}
    for routing, wmr, mse in itertools.product(ROUTINGS, (True, False), (True, False)):
        name = f"mote {routing} wmr={wmr} mse={mse}"
        cases[name] = {"routing": routing, "wmr": wmr, "mse": mse}
    for key, values in (
        ("wmr_loss", WMR_LOSSES),
        ("wmr_temperatures", WMR_TEMPERATURES),
        ("expert_init", EXPERT_INITS),
        ("inference", INFERENCES),
    ):
        cases.update({f"mote {key}={value}": {key: value} for value in values})
    return cases


CASES = combinations()


def model_of(overrides: dict) -> MoTE:
    torch.manual_seed(0)
    cfg = MoTEConfig(**{"dim": D, "heads": HEADS, "layers": LAYERS, **overrides})
    return MoTE(cfg)


def data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, T, D, generator=g)
    return (
        e,
        torch.randint(C, (B,), generator=g),
        F.normalize(torch.randn(C, D, generator=g), dim=-1),
    )


def expected_without_gradient(model: MoTE, routed: list[set[int]] | None) -> set[str]:
    """The expert parameters no micro-batch routed to (None: every expert takes part)."""
    if routed is None or not model.architecture.routes_experts:
        return set()
    return {
        f"transformer.resblocks.{layer}.mlp.{kind}.{expert}.{what}"
        for layer in range(LAYERS)
        for expert in range(model.cfg.experts)
        if expert not in routed[layer]
        for kind in ("fc_up", "fc_dn")
        for what in ("weight", "bias")
    }


def check_gradients(model: MoTE, exempt: set[str]) -> None:
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in exempt:
            assert p.grad is None, f"{name} was not routed to but got a gradient"
        else:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_per_micro_batch_losses_train_every_parameter(overrides):
    model = model_of(overrides).train()
    e, labels, text = data()
    generator = torch.Generator().manual_seed(3)
    draws = draw_step(torch.Generator().manual_seed(3), 1, model.cfg)
    losses = model.training_losses(e, labels, text, generator=generator)
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses["total"].backward()
    check_gradients(model, expected_without_gradient(model, draws.routed_experts()))


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_fused_step_trains_every_parameter_and_evaluates(overrides):
    model = model_of(overrides).train()
    e, labels, text = data()
    gens = [torch.Generator().manual_seed(10 + j) for j in range(M)]
    routed = draw_step([torch.Generator().manual_seed(10 + j) for j in range(M)], M, model.cfg)
    optimizer = adamw(model.parameters(), "cpu", lr=1e-3)
    sums, correct = fused_step(
        LossModule(model, None), optimizer, e, labels, text, gens, global_size=B
    )
    assert all(torch.isfinite(v) for v in sums.values()) and 0 <= int(correct) <= B
    check_gradients(model, expected_without_gradient(model, routed.routed_experts()))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    model.set_finetune_text(text)  # TFM compares with the tuned classes
    with torch.no_grad():
        scores, rho = model.predict(e, text, tfm=True, generator=torch.Generator().manual_seed(0))
    assert scores.shape == (B, C) and torch.isfinite(scores).all()
    assert rho.shape == (B,) and ((rho > 0) & (rho <= 1 + 1e-5)).all()  # m <= 1 up to rounding


def test_every_listed_name_has_one_registered_class():
    """arch_names.py (what --help lists, torch-free) and the registry name the same set."""
    assert architecture_names() == ARCH_NAMES
    assert all(get_architecture(name).name == name for name in ARCH_NAMES)


@pytest.mark.parametrize("name", architecture_names())
def test_an_architecture_reads_only_real_switches(name):
    """Its settings are MoTEConfig fields; MoTE reads every switch (the widest ablation)."""
    switches = {f.name for f in dataclasses.fields(MoTEConfig)} - {"dim", "arch"}
    settings = set(get_architecture(name).settings)
    assert settings <= switches
    assert name != MOTE or settings == switches
