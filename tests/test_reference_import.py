"""Importing reference MoTE checkpoints: files written here in the reference's own layout
(spec 14), with real mote-tiny CLIP visual weights, must reproduce the original predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from helpers import merged_state_dict

from mote.pipeline.clip.build import build_clip
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.reference_import import (
    load_reference_checkpoint,
    temporal_from_reference,
    visual_from_reference,
)
from mote.pipeline.runs.run_folder import load_run
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config
from mote.stages import import_reference

D, LAYERS = 64, 2


@pytest.fixture(scope="module")
def tiny_visual() -> dict[str, torch.Tensor]:
    """Real open_clip mote-tiny visual weights, in the naming the reference checkpoints use."""
    encoder = build_clip("mote-tiny", "none", device="cpu", seed=3)
    return {k: v.clone() for k, v in encoder.model.state_dict().items() if k.startswith("visual.")}


@pytest.fixture(scope="module")
def original() -> MoTE:
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=LAYERS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.05)
        model.logit_scale.fill_(4.2)
    model.set_finetune_text(torch.randn(400, D, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def reference_checkpoint(path: Path, model: MoTE, visual: dict[str, torch.Tensor]) -> Path:
    """What the reference's train.py saves: DDP-prefixed temporal module + K400 text bank."""
    sd = model.state_dict()
    fusion = {f"module.{k}": v.clone() for k, v in sd.items() if k not in ("logit_scale",)}
    fusion["module.spe_cls_feature"] = fusion.pop("module.finetune_text")
    clip = {**{k: v.clone() for k, v in visual.items()}, "logit_scale": sd["logit_scale"].clone()}
    optimizer = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
        "param_groups": [{"lr": 5e-5, "weight_decay": 0.2, "params": [0]}],
    }
    torch.save(
        {
            "epoch": 29,
            "model_state_dict": clip,
            "fusion_model_state_dict": fusion,
            "optimizer_state_dict": optimizer,
        },
        path,
    )
    return path


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    e = torch.randn(5, 8, D, generator=g)
    text = F.normalize(torch.randn(12, D, generator=g), dim=-1)
    return e, text


def test_import_reproduces_predictions(tmp_path, original, tiny_visual):
    ckpt = load_reference_checkpoint(reference_checkpoint(tmp_path / "b.pt", original, tiny_visual))
    assert ckpt["epoch"] == 29
    clip = visual_from_reference(ckpt["model_state_dict"])
    cfg, state, bank = temporal_from_reference(
        ckpt["fusion_model_state_dict"], logit_scale=clip["logit_scale"]
    )
    assert (cfg.arch, cfg.dim, cfg.layers, cfg.experts, cfg.heads) == ("mote", D, LAYERS, 4, 1)
    assert cfg.context == 77 and bank.shape == (400, D)
    imported = MoTE(cfg)
    imported.load_state_dict(state, strict=True)
    imported.eval()
    assert imported.logit_scale.item() == pytest.approx(4.2)
    e, text = inputs()
    for tfm in (False, True):
        got, rho = imported.predict(e, text, tfm=tfm)
        want, want_rho = original.predict(e, text, tfm=tfm)
        assert torch.equal(got, want) and torch.equal(rho, want_rho)
    assert not torch.allclose(imported.predict(e, text, tfm=True)[0], imported.predict(e, text)[0])


def test_visual_weights_come_back_in_openai_naming(tmp_path, original, tiny_visual):
    ckpt = load_reference_checkpoint(reference_checkpoint(tmp_path / "b.pt", original, tiny_visual))
    clip = visual_from_reference(ckpt["model_state_dict"])
    assert set(clip) == set(tiny_visual) | {"logit_scale"}
    assert all(torch.equal(clip[k], v) for k, v in tiny_visual.items())
    assert "visual.proj" in clip and "visual.transformer.resblocks.1.attn.in_proj_weight" in clip
    with pytest.raises(ConfigError, match="no visual"):
        visual_from_reference({"logit_scale": torch.tensor(4.6)})


def test_wrong_files_give_clear_errors(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, plain)
    with pytest.raises(ConfigError) as err:
        load_reference_checkpoint(plain)
    message = str(err.value)
    assert "plain.pt" in message and "fusion_model_state_dict" in message
    assert "'state_dict'" in message and "'epoch'" in message  # what it found
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="cannot be read as a torch checkpoint"):
        load_reference_checkpoint(text)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        load_reference_checkpoint(tmp_path / "missing.pt")
    st = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(st))
    with pytest.raises(ConfigError, match="safetensors"):
        load_reference_checkpoint(st)


def test_mismatched_temporal_weights_are_named(original):
    fusion = {k: v for k, v in original.state_dict().items() if k != "logit_scale"}
    fusion["spe_cls_feature"] = fusion.pop("finetune_text")
    broken = dict(fusion)
    broken["transformer.resblocks.1.ln_2.weight"] = torch.ones(D + 1)
    with pytest.raises(ConfigError, match=r"resblocks\.1\.ln_2\.weight: \(65,\)"):
        temporal_from_reference(broken)
    missing = {k: v for k, v in fusion.items() if "resblocks.0.attn.out_proj.bias" not in k}
    with pytest.raises(ConfigError, match="missing"):
        temporal_from_reference(missing)
    with pytest.raises(ConfigError, match="frame_position_embeddings"):
        temporal_from_reference({"transformer.resblocks.0.ln_1.weight": torch.ones(D)})


def test_released_sizes_are_recognised_from_shapes():
    for dim, heads, layers, merged in ((512, 8, 4, 12_648_960), (768, 12, 6, 42_586_368)):
        with torch.device("meta"):
            state = MoTE(default_config(dim)).state_dict()
        fusion = {f"module.{k}": v for k, v in state.items() if k not in ("logit_scale",)}
        fusion["module.spe_cls_feature"] = torch.zeros(400, dim, device="meta")
        del fusion["module.finetune_text"]
        cfg, _, bank = temporal_from_reference(fusion)
        assert (cfg.heads, cfg.layers, cfg.experts, cfg.arch) == (heads, layers, 4, "mote")
        assert bank.shape == (400, dim)
        with torch.device("meta"):
            assert MoTE(cfg).num_params(merged=True) == merged


def test_single_ffn_baseline_and_meanpool_checkpoints(original):
    """The reference's num_experts=0 layout (mlp.c_fc / mlp.c_proj) is mote's transformer
    arch; the merged MoTE written that way predicts what the MoTE predicts."""
    fusion = merged_state_dict(original)
    fusion["spe_cls_feature"] = original.finetune_text.clone()
    cfg, state, _ = temporal_from_reference(fusion, logit_scale=torch.tensor([4.2]))
    assert (cfg.arch, cfg.layers, cfg.experts) == ("transformer", LAYERS, 1)
    baseline = MoTE(cfg)
    baseline.load_state_dict(state, strict=True)
    e, text = inputs()
    for tfm in (False, True):
        got = baseline.eval().predict(e, text, tfm=tfm)[0]
        assert torch.allclose(got, original.predict(e, text, tfm=tfm)[0], atol=1e-6)
    cfg, state, bank = temporal_from_reference({"spe_cls_feature": torch.zeros(400, D)})
    assert cfg.arch == "meanpool" and bank.shape == (400, D)
    MoTE(cfg).load_state_dict(state, strict=True)
    assert state["logit_scale"].item() == pytest.approx(math.log(100))


# ---------------------------------------------------------------------------------------------
# The stage


def test_stage_writes_a_loadable_run_folder(tmp_path, original, tiny_visual):
    ckpt = reference_checkpoint(tmp_path / "MoTE_tiny.pt", original, tiny_visual)
    out = tmp_path / "run"
    summary = import_reference.run(
        import_reference.ImportReferenceConfig(ckpt, out, model="mote-tiny", pretrained="none")
    )
    assert summary["params_merged"] == LAYERS * (12 * D * D + 13 * D) + 77 * D
    assert summary["clip_tensors"] == len(tiny_visual) and summary["epoch"] == 29
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == "import-reference" and config["checkpoint"] == str(ckpt)
    assert config["clip"] == {"model": "mote-tiny", "pretrained": "none"}
    assert config["params_train"] == original.num_params(merged=False)
    cfg = MoTEConfig.from_dict(config["model_config"])
    assert config["arch"] == "mote" and cfg == original.cfg
    tensors = safetensors.torch.load_file(str(out / "model.safetensors"))
    clip = {k[len("clip.") :]: v for k, v in tensors.items() if k.startswith("clip.")}
    assert set(clip) == set(tiny_visual) and all(k.startswith("visual.") for k in clip)
    model = MoTE(cfg)
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("clip.")})
    e, text = inputs()
    assert torch.equal(
        model.eval().predict(e, text, tfm=True)[0], original.predict(e, text, tfm=True)[0]
    )
    encoder = build_clip("mote-tiny", "none", device="cpu", seed=9)
    encoder.model.visual.load_state_dict({k[len("visual.") :]: v for k, v in clip.items()})
    loaded = load_run(out)  # the evaluation stages' reader
    assert torch.equal(loaded.model.finetune_text, original.finetune_text)
    assert set(loaded.clip_state) == set(tiny_visual)


def test_stage_head_only_and_refusals(tmp_path, original, tiny_visual):
    ckpt = reference_checkpoint(tmp_path / "MoTE_tiny.pt", original, tiny_visual)
    summary = import_reference.run(
        import_reference.ImportReferenceConfig(
            ckpt, tmp_path / "head", head_only=True, model="mote-tiny"
        )
    )
    assert summary["clip_tensors"] == 0
    tensors = safetensors.torch.load_file(str(tmp_path / "head" / "model.safetensors"))
    assert not any(k.startswith("clip.") for k in tensors)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["head_only"] is True and config["clip_weights"] == "pretrained"
    with pytest.raises(ConfigError, match="already exists"):
        import_reference.run(
            import_reference.ImportReferenceConfig(ckpt, tmp_path / "head", model="mote-tiny")
        )
    with pytest.raises(ConfigError, match="embedding width 64 vs 512"):
        import_reference.run(
            import_reference.ImportReferenceConfig(ckpt, tmp_path / "b16", model="ViT-B-16")
        )
    with pytest.raises(ConfigError, match="not an open_clip model"):
        import_reference.run(
            import_reference.ImportReferenceConfig(ckpt, tmp_path / "x", model="ViT-Q-99")
        )
    assert not (tmp_path / "b16").exists()
    assert MoTEConfig.from_dict(config["model_config"]) == original.cfg
