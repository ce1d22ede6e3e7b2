"""The fused training step (issue 10) against the per-micro-batch loop it replaces.

The production steps of ``pipeline/train/step.py``, from the same weights and the same
generators: ``fused_step`` must give ``train_step``'s loss terms and every gradient to 1e-5
(fp32, CPU), for every switch that changes what a micro-batch runs; ``draw_step`` must consume
the CPU generators exactly as the loop does, so resume stays exact.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.fused import adamw, adamw_options, fused_loss_fn, fused_losses
from mote.pipeline.temporal.micro_batches import micro_batch_sizes
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.routing import (
    StepDraws,
    draw_step,
    sample_experts,
    sample_temperatures,
    wmr_coefficients,
)
from mote.pipeline.temporal.temporal_config import MoTEConfig
from mote.pipeline.train.step import LossModule, fused_step, train_step

D, HEADS, LAYERS, T, C, M = 64, 2, 2, 8, 6, 3


def cfg_of(**overrides) -> MoTEConfig:
    return MoTEConfig(**{"dim": D, "heads": HEADS, "layers": LAYERS, **overrides})


def model_of(cfg: MoTEConfig) -> MoTE:
    """A float32 model whose zero-initialised biases are made random, so they are exercised."""
    torch.manual_seed(0)
    model = MoTE(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.05)
    return model


def batch(size: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(size, T, D, generator=g)
    y = torch.randint(C, (size,), generator=g)
    text = F.normalize(torch.randn(C, D, generator=g), dim=-1)
    return e, y, text


def generators(seed: int = 100) -> list[torch.Generator]:
    """One generator per micro-batch slot, as the training loop holds them."""
    return [torch.Generator().manual_seed(seed + j) for j in range(M)]


def both_steps(cfg: MoTEConfig, size: int = 12):
    """Run ``train_step`` (micro-batch by micro-batch) and ``fused_step`` from the same weights
    and generators; return both models and both (sums, correct)."""
    plain, fused = model_of(cfg), model_of(cfg)
    e, y, text = batch(size)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=0.2)
    opt_fused = adamw(fused.parameters(), "cpu", lr=1e-3, weight_decay=0.2)
    out_plain = train_step(
        LossModule(plain, None), opt_plain, e, y, text, generators(), global_size=size
    )
    out_fused = fused_step(
        LossModule(fused, None), opt_fused, e, y, text, generators(), global_size=size
    )
    return plain, fused, out_plain, out_fused


def assert_same_step(plain, fused, out_plain, out_fused) -> None:
    (sums_p, correct_p), (sums_f, correct_f) = out_plain, out_fused
    for key in ("total", "ce", "wmr", "mse"):
        torch.testing.assert_close(sums_f[key], sums_p[key], rtol=1e-5, atol=1e-5, msg=key)
    assert int(correct_f) == int(correct_p)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert (p.grad - q.grad).abs().max().item() <= 1e-5, name


CONFIGS = {
    "mote defaults": {},
    "no WMR": {"wmr": False},
    "no MSE": {"mse": False},
    "no WMR, no MSE": {"wmr": False, "mse": False},
    "uniform routing": {"routing": "uniform"},
    "fixed routing, no WMR": {"routing": "fixed", "wmr": False},
    "all routing": {"routing": "all"},
    "all routing, no WMR": {"routing": "all", "wmr": False},
    "kl WMR loss, normal taus": {"wmr_loss": "kl", "wmr_temperatures": "normal"},
    "mse WMR loss, uniform taus": {"wmr_loss": "mse", "wmr_temperatures": "uniform"},
    "point taus": {"wmr_temperatures": "point"},
    "transformer": {"arch": "transformer"},
    "meanpool": {"arch": "meanpool"},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_fused_step_equals_the_per_micro_batch_loop(overrides):
    assert_same_step(*both_steps(cfg_of(**overrides)))


@pytest.mark.parametrize("size", [11, 2], ids=["uneven micro-batches", "fewer videos than M"])
def test_fused_step_splits_a_ragged_batch_as_the_loop(size):
    assert_same_step(*both_steps(cfg_of(), size=size))


def test_micro_batch_sizes_follow_tensor_split():
    for size in range(1, 20):
        for parts in range(1, 5):
            split = torch.arange(size).tensor_split(min(parts, size))
            assert micro_batch_sizes(size, parts) == [len(part) for part in split]


def test_draw_step_consumes_the_generator_like_the_loop():
    cfg = cfg_of()
    g_loop, g_fused = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    want = []
    for _ in range(M):  # the loop: routed experts, then WMR temperatures, per micro-batch
        experts = sample_experts(cfg.routing, cfg.experts, LAYERS, g_loop)
        taus = sample_temperatures(cfg.wmr_temperatures, cfg.wmr_beta, LAYERS, g_loop)
        want.append((experts, taus))
    draws = draw_step(g_fused, M, cfg)
    assert torch.equal(g_loop.get_state(), g_fused.get_state())
    assert draws.experts.tolist() == [w[0] for w in want]
    assert draws.temperatures.tolist() == [w[1] for w in want]
    assert draws.experts.dtype == torch.int64 and draws.temperatures.dtype == torch.float64
    for j, (experts, taus) in enumerate(want):
        assert torch.equal(draws.routed[j], F.one_hot(torch.tensor(experts), 4).float())
        for layer, tau in enumerate(taus):
            assert torch.equal(draws.merge[j, layer], wmr_coefficients(tau, cfg.experts))


def test_draw_step_with_one_generator_per_slot():
    cfg = cfg_of(wmr_temperatures="normal")
    draws = draw_step([torch.Generator().manual_seed(10 + j) for j in range(M)], M, cfg)
    for j in range(M):
        g = torch.Generator().manual_seed(10 + j)
        assert draws.experts[j].tolist() == sample_experts(cfg.routing, 4, LAYERS, g)
        assert draws.temperatures[j].tolist() == sample_temperatures("normal", 0.6, LAYERS, g)
    with pytest.raises(ConfigError, match="2 generators for 3 micro-batches"):
        draw_step([torch.Generator(), torch.Generator()], M, cfg)


@pytest.mark.parametrize("wmr", [True, False], ids=["WMR", "no WMR"])
def test_a_rank_draws_only_its_own_slots_unless_an_expert_can_miss_its_gradient(wmr):
    """Rank 1 of 2 with 4 slots trains slots 2 and 3: the fused step makes the loop's update and
    leaves the generators of slots 0 and 1 alone, except without WMR, where it draws the whole
    world's slots to know which experts no rank routed to (their gradients stay None; an
    expert only the other rank drew keeps a zero gradient for the sum over ranks)."""
    cfg = cfg_of(wmr=wmr)
    plain, fused = model_of(cfg), model_of(cfg)
    e, y, text = batch(12)
    share = slice(6, 12)  # rank 1's half of a global batch of 12 in 4 micro-batches
    world = 4
    gens_plain = [torch.Generator().manual_seed(100 + j) for j in range(world)]
    gens_fused = [torch.Generator().manual_seed(100 + j) for j in range(world)]
    untouched = [g.get_state() for g in gens_fused]
    where = {"global_size": 12, "rank": 1, "world_size": 2}
    out_plain = train_step(
        LossModule(plain, None), torch.optim.AdamW(plain.parameters(), lr=1e-3),
        e[share], y[share], text, gens_plain, **where,
    )  # fmt: skip
    out_fused = fused_step(
        LossModule(fused, None), adamw(fused.parameters(), "cpu", lr=1e-3),
        e[share], y[share], text, gens_fused, **where,
    )  # fmt: skip
    if wmr:
        assert_same_step(plain, fused, out_plain, out_fused)
    else:  # before the sum over ranks an expert only rank 0 drew has a zero gradient here
        for key in ("total", "ce", "wmr", "mse"):
            torch.testing.assert_close(out_fused[0][key], out_plain[0][key], rtol=1e-5, atol=1e-5)
    for j in (2, 3):  # its own slots: drawn once each, as the loop draws them
        assert torch.equal(gens_fused[j].get_state(), gens_plain[j].get_state())
    others = [torch.equal(gens_fused[j].get_state(), untouched[j]) for j in (0, 1)]
    assert others == ([True, True] if wmr else [False, False])


def test_draws_are_tensors_and_baselines_draw_nothing():
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    for arch in ("transformer", "meanpool"):
        assert draw_step(g, M, cfg_of(arch=arch)) == StepDraws(M)
    assert torch.equal(g.get_state(), before)
    draws = draw_step(g, M, cfg_of(routing="all", wmr_temperatures="point"))
    assert draws.experts is None and draws.routed is None
    assert torch.equal(draws.merge, torch.full((M, LAYERS, 4), 0.25))
    assert torch.equal(g.get_state(), before)  # "all" and "point" draw nothing


def test_stacked_micro_batches_equal_the_flat_batch():
    cfg = cfg_of()
    model = model_of(cfg)
    e, y, text = batch(12)
    draws = draw_step(torch.Generator().manual_seed(1), M, cfg)
    flat = fused_losses(model, e, y, text, draws)
    stacked = fused_losses(model, e.view(M, 4, T, D), y.view(M, 4), text, draws)
    for key in ("loss", "total", "ce", "wmr", "mse", "logits"):
        assert torch.equal(flat[key], stacked[key]), key
    with pytest.raises(ConfigError, match="a batch of 2 makes 2 micro-batches, but the draws are"):
        fused_losses(model, e[:2], y[:2], text, draws)
    with pytest.raises(ConfigError, match=r"do not hold 2 micro-batches as \(M, b, T, D\)"):
        two = draw_step(torch.Generator(), 2, cfg)
        fused_losses(model, e.view(M, 4, T, D), y.view(M, 4), text, two)


def test_fused_adamw_matches_the_per_tensor_loop():
    """The optimiser the fused step uses computes the same update as train-temporal's."""
    assert adamw_options("cpu") == {"fused": True} and adamw_options("cuda") == {"fused": True}
    models = [model_of(cfg_of()), model_of(cfg_of())]
    opts = [
        torch.optim.AdamW(models[0].parameters(), lr=1e-2, weight_decay=0.2),
        adamw(models[1].parameters(), "cpu", lr=1e-2, weight_decay=0.2),
    ]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in models[0].parameters()]
        for model, opt in zip(models, opts, strict=True):
            for p, grad in zip(model.parameters(), grads, strict=True):
                p.grad = grad.clone()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"wmr": False}, {"arch": "transformer"}])
def test_compiled_losses_equal_eager_with_no_graph_break_and_one_recompile(overrides):
    """The CPU twin of ``--compile`` (aot_eager: dynamo + AOT autograd, eager kernels): same
    losses and gradients as eager, one graph for full batches and one recompile for the
    epoch's smaller last batch, whatever the number of steps."""
    from torch._dynamo.utils import counters

    cfg = cfg_of(**overrides)
    eager, compiled = model_of(cfg), model_of(cfg)
    torch._dynamo.reset()
    counters.clear()
    eager_fn, compiled_fn = fused_loss_fn(eager), fused_loss_fn(compiled, compile=True)
    g_eager, g_compiled = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step, size in enumerate((12, 12, 10, 12, 10, 12)):
        e, y, text = batch(size, seed=step)
        parts = len(micro_batch_sizes(size, M))
        outs = []
        for model, fn, g in ((eager, eager_fn, g_eager),
                             (compiled, compiled_fn, g_compiled)):  # fmt: skip
            model.zero_grad(set_to_none=True)
            outs.append(fn(e, y, text, draw_step(g, parts, cfg)))
            outs[-1]["loss"].backward()
        for key in ("loss", "total", "ce", "wmr", "mse", "sizes", "logits"):
            torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2  # full batches, and the last one


def aten_calls(step) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(ev.name.startswith("aten::") for ev in prof.events())


def test_fused_step_makes_at_least_5x_fewer_operator_calls():
    """Issue 10's machine-independent figure: aten calls per MoTE step (WMR, MSE, 3
    micro-batches, AdamW included); it does not depend on D or the batch size."""
    cfg = cfg_of(layers=4)
    plain, fused_model = model_of(cfg), model_of(cfg)
    e, y, text = batch(12)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    opt_f = adamw(fused_model.parameters(), "cpu", lr=1e-4)
    gens = generators()

    def per_micro_batch():
        train_step(LossModule(plain, None), opt_p, e, y, text, gens, global_size=len(y))

    def fused():
        fused_step(LossModule(fused_model, None), opt_f, e, y, text, gens, global_size=len(y))

    for step in (per_micro_batch, fused):
        step()  # optimiser state exists from here on
    before, after = aten_calls(per_micro_batch), aten_calls(fused)
    assert before >= 5 * after, (before, after)
