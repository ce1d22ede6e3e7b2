"""MoTE temporal module against the spec: its tables, wiring, merging, TFM and losses.

The architecture checks compare with ``manual_forward``, a from-scratch float64 re-derivation of
spec 2.2-2.4 written with plain tensor ops, so a wiring slip in the module cannot hide.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import merged_state_dict

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.mote_model import MoTE, tfm_rho_from_similarity
from mote.pipeline.temporal.routing import (
    routing_probabilities,
    sample_experts,
    sample_temperatures,
    wmr_coefficients,
    wmr_temperature_set,
)
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config

D, HEADS, LAYERS, N, T, B, C = 64, 2, 2, 4, 8, 3, 6
INF = math.inf


def small(**overrides) -> MoTEConfig:
    return MoTEConfig(**{"dim": D, "heads": HEADS, "layers": LAYERS, **overrides})


def built(seed: int = 0, biases: bool = True, **overrides) -> MoTE:
    """A float64 MoTE; with ``biases`` every zero-initialised bias gets random values, so
    bias handling (e.g. averaging biases when merging) is actually exercised."""
    torch.manual_seed(seed)
    model = MoTE(small(**overrides)).double()
    if biases:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(std=0.05)
    return model


def features(seed: int = 1, batch: int = B, frames: int = T) -> torch.Tensor:
    return torch.randn(batch, frames, D, generator=torch.Generator().manual_seed(seed)).double()


def text_bank(seed: int = 2, classes: int = C) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(classes, D, generator=g), dim=-1).double()


def expert_ffn(sd: dict, layer: int, coeffs: list[float]) -> tuple[torch.Tensor, ...]:
    """sum_i c_i theta_i of one layer, from a state dict."""
    p = f"transformer.resblocks.{layer}.mlp."
    return tuple(
        sum(c * sd[f"{p}{part}.{i}.{kind}"] for i, c in enumerate(coeffs))
        for part, kind in (
            ("fc_up", "weight"),
            ("fc_up", "bias"),
            ("fc_dn", "weight"),
            ("fc_dn", "bias"),
        )
    )


def one_hot(k: int) -> list[float]:
    return [1.0 if i == k else 0.0 for i in range(N)]


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-12) * w + b


def manual_forward(model: MoTE, e: torch.Tensor, ffns: list[tuple], rho=1.0) -> torch.Tensor:
    """Spec 2.2-2.4 by hand: pre-LN blocks over u0 = e + P, then x = rho * s + e."""
    sd = model.state_dict()
    b, t, d = e.shape
    hd = d // HEADS
    u = e + sd["frame_position_embeddings.weight"][:t]
    for layer, (w_up, b_up, w_dn, b_dn) in enumerate(ffns):
        p = f"transformer.resblocks.{layer}."
        h = layer_norm(u, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.in_proj_weight"].t() + sd[p + "attn.in_proj_bias"]
        q, k, v = (z.reshape(b, t, HEADS, hd).transpose(1, 2) for z in qkv.split(d, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, t, d)
        u = u + att @ sd[p + "attn.out_proj.weight"].t() + sd[p + "attn.out_proj.bias"]
        h = layer_norm(u, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        a = h @ w_up.t() + b_up
        u = u + (a * torch.sigmoid(1.702 * a)) @ w_dn.t() + b_dn
    if isinstance(rho, torch.Tensor):
        rho = rho.reshape(b, 1, 1)
    return rho * u + e


# ---------------------------------------------------------------------------------------------
# Spec tables


def test_parameter_counts_match_spec_11_4():
    with torch.device("meta"):
        b16, l14 = MoTE(default_config(512)), MoTE(default_config(768))
    assert (b16.num_params(merged=True), b16.num_params(merged=False)) == (12_648_960, 37_845_504)
    assert (l14.num_params(merged=True), l14.num_params(merged=False)) == (42_586_368, 127_590_144)
    assert b16.cfg.heads == 8 and l14.cfg.heads == 12 and l14.cfg.layers == 6


def test_merged_state_dict_is_the_deployable_module():
    model = built()
    merged = merged_state_dict(model)
    assert sum(v.numel() for v in merged.values()) == model.num_params(merged=True)
    assert model.num_params(merged=True) == LAYERS * (12 * D * D + 13 * D) + 77 * D
    sd = model.state_dict()
    up = torch.stack([sd[f"transformer.resblocks.1.mlp.fc_up.{i}.bias"] for i in range(N)])
    assert torch.allclose(merged["transformer.resblocks.1.mlp.c_fc.bias"], up.mean(0), atol=1e-15)
    assert not any("fc_up" in k or "fusion" in k or "logit" in k for k in merged)
    baseline = MoTE(small(arch="transformer"))
    assert baseline.num_params(merged=True) == baseline.num_params(merged=False)
    assert baseline.num_params(merged=True) == model.num_params(merged=True)
    assert MoTE(small(arch="meanpool")).num_params(merged=True) == 0


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (3, [0.09003, 0.24473, 0.66524]),
        (4, [0.03206, 0.08714, 0.23688, 0.64391]),
        (5, [0.01166, 0.03168, 0.08613, 0.23412, 0.63641]),
        (6, [0.00427, 0.01161, 0.03155, 0.08576, 0.23312, 0.63369]),
    ],
)
def test_routing_probabilities_match_spec_3_1(n, expected):
    assert torch.allclose(routing_probabilities(n), torch.tensor(expected), atol=6e-6)


def test_temperature_set_matches_spec_4_1():
    values = wmr_temperature_set(0.6)
    spec = [-9.6, -4.8, -2.4, -1.2, -0.6, 0.6, 1.2, 2.4, 4.8, 9.6, INF]
    assert len(values) == 11 and values == pytest.approx(spec, abs=1e-12)


WMR_TABLE = {
    0.6: [0.0055, 0.0290, 0.1534, 0.8122],
    1.2: [0.0481, 0.1107, 0.2548, 0.5863],
    2.4: [0.1204, 0.1826, 0.2770, 0.4201],
    4.8: [0.1780, 0.2193, 0.2701, 0.3326],
    9.6: [0.2124, 0.2357, 0.2616, 0.2903],
    -0.6: [0.8122, 0.1534, 0.0290, 0.0055],
    -1.2: [0.5863, 0.2548, 0.1107, 0.0481],
    -2.4: [0.4201, 0.2770, 0.1826, 0.1204],
    -4.8: [0.3326, 0.2701, 0.2193, 0.1780],
    -9.6: [0.2903, 0.2616, 0.2357, 0.2124],
    INF: [0.25, 0.25, 0.25, 0.25],
}


@pytest.mark.parametrize("tau", list(WMR_TABLE))
def test_wmr_coefficients_match_spec_4_2(tau):
    assert torch.allclose(wmr_coefficients(tau, 4), torch.tensor(WMR_TABLE[tau]), atol=6e-5)


def test_wmr_coefficients_are_exactly_uniform_at_infinity():
    assert torch.equal(wmr_coefficients(INF, 4), torch.full((4,), 0.25))
    assert torch.equal(wmr_coefficients(-INF, 4), torch.full((4,), 0.25))
    with pytest.raises(ConfigError):
        wmr_coefficients(0.0, 4)


RHO_TABLE = {  # m -> rho at gamma 0.04, 0.05, 0.06, 0.07
    1.00: [1, 1, 1, 1],
    0.99: [0.7788, 0.8187, 0.8465, 0.8669],
    0.95: [0.2865, 0.3679, 0.4346, 0.4895],
    0.90: [0.0821, 0.1353, 0.1889, 0.2397],
    0.85: [0.0235, 0.0498, 0.0821, 0.1173],
    0.80: [0.0067, 0.0183, 0.0357, 0.0574],
    0.70: [0.0006, 0.0025, 0.0067, 0.0138],
}


@pytest.mark.parametrize("column", range(4))
def test_tfm_rho_matches_spec_5(column):
    gamma = (0.04, 0.05, 0.06, 0.07)[column]
    m = torch.tensor(list(RHO_TABLE))
    want = torch.tensor([row[column] for row in RHO_TABLE.values()])
    assert torch.allclose(tfm_rho_from_similarity(m, gamma), want, atol=6e-5)


# ---------------------------------------------------------------------------------------------
# Architecture


def test_forced_expert_matches_the_hand_written_block():
    model = built()
    e = features()
    x = model.forward_features(e, mode="expert", experts=[2, 0])
    sd = model.state_dict()
    want = manual_forward(model, e, [expert_ffn(sd, 0, one_hot(2)), expert_ffn(sd, 1, one_hot(0))])
    assert torch.allclose(x, want, atol=1e-10)
    routed = model.forward_features(e, mode="routed", experts=[2, 0])
    assert torch.equal(routed, x)


def test_merge_averages_weights_and_biases_not_outputs():
    model = built()
    with torch.no_grad():  # spread the experts so the QuickGELU non-linearity matters
        for name, p in model.named_parameters():
            if ".mlp.fc_" in name and name.endswith("weight"):
                p.normal_(std=0.3)
    e = features()
    model.eval()
    x = model.forward_features(e)  # eval: "auto" -> merged
    sd = model.state_dict()
    uniform = [1 / N] * N
    want = manual_forward(model, e, [expert_ffn(sd, layer, uniform) for layer in range(LAYERS)])
    assert torch.allclose(x, want, atol=1e-10)
    # The same as the deployable single-FFN module loaded into the baseline arch.
    baseline = MoTE(small(arch="transformer")).double().eval()
    merged = {
        k.replace("mlp.c_fc.", "mlp.fc_up.0.").replace("mlp.c_proj.", "mlp.fc_dn.0."): v
        for k, v in merged_state_dict(model).items()
    }
    missing = baseline.load_state_dict(merged, strict=False).missing_keys
    assert sorted(missing) == sorted(
        ["logit_scale", "finetune_text"]
        + [f"transformer.resblocks.{i}.mlp.mote_fusion_weight" for i in range(LAYERS)]
    )
    assert torch.allclose(baseline.forward_features(e), x, atol=1e-10)
    # Averaging the experts' outputs ("all" routing) is a different function.
    averaged_outputs = MoTE(small(routing="all")).double()
    averaged_outputs.load_state_dict(model.state_dict())
    y = averaged_outputs.forward_features(e, mode="routed")
    assert (y - x).abs().max() > 1e-3
    per_expert = [model.forward_features(e, mode="expert", experts=[i, i]) for i in range(N)]
    assert not torch.allclose(y, torch.stack(per_expert).mean(0))  # averaged per layer, not end


def test_wmr_pass_uses_temperature_coefficients_and_equals_merge_at_infinity():
    model = built().eval()
    e = features()
    assert torch.equal(
        model.forward_features(e, mode="wmr", temperatures=[INF, INF]),
        model.forward_features(e, mode="merged"),
    )
    sd = model.state_dict()
    x = model.forward_features(e, mode="wmr", temperatures=[0.6, -2.4])
    want = manual_forward(
        model,
        e,
        [expert_ffn(sd, 0, WMR_TABLE_EXACT(0.6)), expert_ffn(sd, 1, WMR_TABLE_EXACT(-2.4))],
    )
    assert torch.allclose(x, want, atol=1e-10)


def WMR_TABLE_EXACT(tau: float) -> list[float]:  # noqa: N802 - reads like the table it computes
    return [
        math.exp(i / tau) / sum(math.exp(j / tau) for j in range(1, N + 1)) for i in range(1, N + 1)
    ]


def test_residual_wiring_spec_2_4():
    """With every branch zeroed, s = e + P, so x = rho (e + P) + e, not rho P + e or s."""
    model = built()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "out_proj" in name or ".fc_dn." in name:
                p.zero_()
    e = features()
    pos = model.state_dict()["frame_position_embeddings.weight"][:T]
    for rho in (None, 0.3):
        x = model.forward_features(e, mode="merged", rho=rho)
        r = 1.0 if rho is None else rho
        assert torch.allclose(x, r * (e + pos) + e, atol=1e-12)
    per_view = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    x = model.forward_features(e, mode="merged", rho=per_view)
    assert torch.allclose(x, per_view.reshape(B, 1, 1) * (e + pos) + e, atol=1e-12)
    assert torch.equal(x[0], e[0])  # rho = 0 is CLIP mean pooling of the raw features


def test_layer_norm_eps_and_initialisation_spec_2_6():
    torch.manual_seed(0)
    model = MoTE(default_config(512))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 8 and all(m.eps == 1e-12 for m in norms)
    block = model.transformer.resblocks[0]
    bound = math.sqrt(6 / (4 * 512))
    assert block.attn.in_proj_weight.abs().max() <= bound
    assert block.attn.in_proj_weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert block.attn.out_proj.weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert model.frame_position_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.frame_position_embeddings.weight.shape == (77, 512)
    assert block.mlp.fc_up[3].weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert not torch.equal(block.mlp.fc_up[0].weight, block.mlp.fc_up[1].weight)
    assert all(b.abs().sum().item() == 0 for n, b in model.named_parameters() if "bias" in n)
    assert "mlp.mote_fusion_weight" not in dict(model.named_parameters())
    assert torch.equal(block.mlp.mote_fusion_weight, torch.zeros(4))
    assert model.logit_scale.item() == pytest.approx(math.log(100)) and model.logit_scale.ndim == 0
    same = MoTE(small(expert_init="same")).transformer.resblocks[1].mlp
    assert all(torch.equal(same.fc_dn[0].weight, same.fc_dn[i].weight) for i in range(N))


def test_state_dict_names_follow_the_reference_layout():
    keys = set(MoTE(small(experts=3)).state_dict())
    p = "transformer.resblocks.1."
    for key in (
        "frame_position_embeddings.weight",
        p + "attn.in_proj_weight",
        p + "attn.in_proj_bias",
        p + "attn.out_proj.weight",
        p + "ln_2.bias",
        p + "mlp.fc_up.2.weight",
        p + "mlp.fc_dn.2.bias",
        p + "mlp.mote_fusion_weight",
        "logit_scale",
        "finetune_text",
    ):
        assert key in keys
    assert sum(".mlp.fc_up." in k for k in keys) == LAYERS * 3 * 2
    baseline = set(MoTE(small(arch="transformer")).state_dict())
    assert p + "mlp.fc_up.0.weight" in baseline and p + "mlp.fc_up.1.weight" not in baseline


# ---------------------------------------------------------------------------------------------
# TFM


def test_tfm_rho_is_one_for_the_finetune_bank_and_small_for_an_unrelated_one():
    model = built().eval()
    eye = torch.eye(D, dtype=torch.float64)
    model.set_finetune_text(eye[:20])
    e = features()
    assert torch.allclose(model.tfm_rho(e, model.finetune_text), torch.ones(B, dtype=torch.float64))
    unrelated = eye[32:52]  # orthogonal to every fine-tune class: m = 0
    assert model.tfm_rho(e, unrelated).max() < 1e-8


def test_tfm_rho_hand_case_m_095():
    """Query near fine-tune classes 0..4; test class j sits at cosine 0.95 from class j."""
    model = built()
    eye = torch.eye(D, dtype=torch.float64)
    model.set_finetune_text(eye[:10])
    test = 0.95 * eye[:10] + math.sqrt(1 - 0.95**2) * eye[32:42]
    weights = torch.tensor([1.0, 0.99, 0.98, 0.97, 0.96], dtype=torch.float64)
    e = (weights @ eye[:5]).expand(1, T, D)
    assert model.tfm_rho(e, test).item() == pytest.approx(math.exp(-1), rel=1e-6)  # m = 0.95
    # Fine-tune bank {0, 5, 6} caps K at 3: test proxies 0, 1, 2 match 0.95, 0, 0 -> m = 0.95 / 3.
    capped = MoTE(small(tfm_k=5)).double()
    capped.set_finetune_text(eye[[0, 5, 6]])
    want = math.exp(-(1 - 0.95 / 3) / 0.05)
    assert capped.tfm_rho(e, test).item() == pytest.approx(want, rel=1e-6)


def test_predict_applies_rho_per_view_and_needs_the_bank():
    model = built().eval()
    e, text = features(), text_bank()
    with pytest.raises(ConfigError, match="fine-tuning class text bank"):
        model.predict(e, text, tfm=True)
    logits, rho = model.predict(e, text)
    assert torch.equal(rho, torch.ones(B, dtype=torch.float64))
    model.set_finetune_text(text_bank(seed=5, classes=10))
    logits, rho = model.predict(e, text, tfm=True)
    assert rho.shape == (B,) and (rho < 1).all()
    want = manual_forward(
        model, e, [expert_ffn(model.state_dict(), i, [1 / N] * N) for i in range(LAYERS)], rho
    )
    assert torch.allclose(logits, F.normalize(want.mean(1), dim=-1) @ text.t(), atol=1e-10)


def test_load_state_dict_resizes_the_text_bank():
    source = built()
    source.set_finetune_text(text_bank(classes=7) * 3)
    assert torch.allclose(source.finetune_text.norm(dim=-1), torch.ones(7, dtype=torch.float32))
    target = MoTE(small())
    target.load_state_dict(source.float().state_dict(), strict=True)
    assert torch.equal(target.finetune_text, source.finetune_text)


# ---------------------------------------------------------------------------------------------
# Inference variants


def test_ensemble_and_random_inference_table_2c():
    model = built(inference="ensemble").eval()
    e, text = features(), text_bank()
    per_expert = [
        F.normalize(model.forward_features(e, mode="expert", experts=[i, i]).mean(1), dim=-1)
        @ text.t()
        for i in range(N)
    ]
    logits, _ = model.predict(e, text)
    assert torch.allclose(logits, torch.stack(per_expert).mean(0), atol=1e-12)
    rand = MoTE(small(inference="random")).double().eval()
    rand.load_state_dict(model.state_dict())
    drawn = sample_experts("uniform", N, LAYERS, torch.Generator().manual_seed(3))
    logits, _ = rand.predict(e, text, generator=torch.Generator().manual_seed(3))
    x = model.forward_features(e, mode="expert", experts=drawn)
    assert torch.allclose(logits, F.normalize(x.mean(1), dim=-1) @ text.t(), atol=1e-12)


def test_meanpool_arch_is_clip_mean_pooling():
    model = MoTE(small(arch="meanpool")).double()
    e, text = features(), text_bank()
    logits, rho = model.predict(e, text, tfm=True)
    assert torch.allclose(logits, F.normalize(e.mean(1), dim=-1) @ text.t(), atol=1e-12)
    assert torch.equal(rho, torch.ones(B, dtype=torch.float64))
    losses = model.training_losses(e, torch.tensor([0, 1, 2]), text)
    assert losses["wmr"].item() == 0 and losses["mse"].item() == 0
    assert torch.equal(losses["total"], losses["ce"])
    assert [n for n, _ in model.named_parameters()] == ["logit_scale"]


# ---------------------------------------------------------------------------------------------
# Training


def test_loss_terms_equal_hand_computation_spec_4_4():
    model = built()
    e, text, labels = features(), text_bank(), torch.tensor([0, 4, 2])
    e.requires_grad_(True)
    out = model.training_losses(e, labels, text, experts=[3, 1], temperatures=[1.2, -INF])
    sd = model.state_dict()
    x = manual_forward(model, e, [expert_ffn(sd, 0, one_hot(3)), expert_ffn(sd, 1, one_hot(1))])
    coeffs = [WMR_TABLE_EXACT(1.2), [0.25] * 4]
    x_r = manual_forward(model, e, [expert_ffn(sd, i, coeffs[i]) for i in range(LAYERS)])
    cos = F.normalize(x.mean(1), dim=-1) @ text.t()
    cos_r = F.normalize(x_r.mean(1), dim=-1) @ text.t()
    sigma = model.logit_scale.exp().item()  # ln 100 stored in float32 -> 100.0000024
    assert sigma == pytest.approx(100, rel=1e-7)
    ce = F.cross_entropy(sigma * cos, labels)
    wmr = F.cross_entropy(sigma * cos_r, labels)
    mse = ((x_r - e) ** 2).sum() / (B * T * D)
    assert torch.allclose(out["logits"], cos, atol=1e-10)
    for key, want in (
        ("ce", ce),
        ("wmr", wmr),
        ("mse", mse),
        ("total", ce + 0.5 * wmr + 0.1 * mse),
    ):
        assert out[key].item() == pytest.approx(want.item(), rel=1e-9), key
    out["mse"].backward()
    assert e.grad is not None and e.grad.abs().sum() > 0  # e is not detached in the MSE


def test_loss_switches_table_1_and_7c():
    e, text, labels = features(), text_bank(), torch.tensor([0, 4, 2])
    kw = {"experts": [3, 1], "temperatures": [0.6, 9.6]}
    full = built().training_losses(e, labels, text, **kw)
    no_wmr = built(wmr=False).training_losses(e, labels, text, **kw)
    assert no_wmr["wmr"].item() == 0 and no_wmr["ce"].item() == full["ce"].item()
    x = built().forward_features(e, mode="routed", experts=[3, 1])
    assert no_wmr["mse"].item() == pytest.approx(((x - e) ** 2).mean().item())  # routed x
    ce_only = built(wmr=False, mse=False).training_losses(e, labels, text, **kw)
    assert torch.equal(ce_only["total"], ce_only["ce"]) and ce_only["mse"].item() == 0
    base = built(arch="transformer").training_losses(e, labels, text)
    assert base["wmr"].item() == 0 and base["mse"].item() == 0 and "logits" in base
    x_r = built().forward_features(e, mode="wmr", temperatures=[0.6, 9.6])
    as_mse = built(wmr_loss="mse").training_losses(e, labels, text, **kw)
    assert as_mse["wmr"].item() == pytest.approx(((x_r - x) ** 2).mean().item())
    as_kl = built(wmr_loss="kl").training_losses(e, labels, text, **kw)
    sigma = built().logit_scale.exp().item()
    p = F.softmax(sigma * full["logits"], -1)
    log_q = F.log_softmax(sigma * F.normalize(x_r.mean(1), dim=-1) @ text.t(), -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    assert as_kl["wmr"].item() == pytest.approx(kl.item(), rel=1e-9)
    weighted = built(loss_weights=(2.0, 1.0, 0.0)).training_losses(e, labels, text, **kw)
    assert weighted["total"].item() == pytest.approx(2 * full["ce"].item() + full["wmr"].item())


def test_without_wmr_only_the_routed_expert_learns():
    model = built(biases=False, wmr=False)
    e, text, labels = features(), text_bank(), torch.tensor([0, 4, 2])
    model.training_losses(e, labels, text, experts=[1, 3])["total"].backward()
    routed = {0: 1, 1: 3}
    for name, p in model.named_parameters():
        if ".mlp.fc_" in name:
            layer, expert = int(name.split(".")[2]), int(name.split(".")[5])
            assert (p.grad is not None) == (expert == routed[layer]), name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_seeded_generators_give_identical_losses():
    model = built()
    e, text, labels = features(), text_bank(), torch.tensor([0, 4, 2])
    runs = [
        model.training_losses(e, labels, text, torch.Generator().manual_seed(11)) for _ in range(2)
    ]
    for key in ("total", "ce", "wmr", "mse", "logits"):
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_routing_and_temperature_draws_follow_their_distributions():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor(sample_experts("multinomial", N, 40_000, g))
    freq = torch.bincount(draws, minlength=N).float() / draws.numel()
    assert torch.allclose(freq, routing_probabilities(N), atol=0.01)
    assert sample_experts("fixed", N, 3) == [3, 3, 3]
    uniform = torch.bincount(torch.tensor(sample_experts("uniform", N, 40_000, g)))
    assert torch.allclose(uniform.float() / 40_000, torch.full((N,), 0.25), atol=0.01)
    taus = sample_temperatures("discrete", 0.6, 22_000, g)
    counts = {t: taus.count(t) for t in wmr_temperature_set(0.6)}
    assert len(counts) == 11 and all(abs(c / 22_000 - 1 / 11) < 0.01 for c in counts.values())
    assert sample_temperatures("point", 0.6, 3, g) == [INF] * 3
    cont = sample_temperatures("uniform", 0.6, 5_000, g)
    assert max(map(abs, cont)) <= 9.6 and min(cont) < -9 and max(cont) > 9
    normal = torch.tensor(sample_temperatures("normal", 0.6, 5_000, g))
    assert abs(normal.std().item() - 1) < 0.05 and normal.abs().min() >= 1e-6


# ---------------------------------------------------------------------------------------------
# Config


def test_default_config_sizes_and_validation():
    assert (default_config(512).heads, default_config(512).layers) == (8, 4)
    assert (default_config(768).heads, default_config(768).layers) == (12, 6)
    assert (default_config(64).heads, default_config(64).layers) == (1, 4)
    assert default_config(200).heads == 2  # 200 // 64 = 3 does not divide 200
    assert default_config(512, layers=2, arch="transformer").layers == 2
    for bad in ({"arch": "lstm"}, {"routing": "top1"}, {"heads": 3}, {"loss_weights": (1, 2)}):
        with pytest.raises(ConfigError):
            small(**bad)
    cfg = small(wmr_loss="kl")
    again = MoTEConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and isinstance(again.loss_weights, tuple)
    with pytest.raises(ConfigError, match="unknown keys"):
        MoTEConfig.from_dict({**dataclasses.asdict(cfg), "gate": 1})
    with pytest.raises(ConfigError, match="frames"):
        built().forward_features(features(frames=78))
