"""The CLIP wrapper on the built-in mote-tiny: seeding, encoders, weight files, fast failures."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from mote.pipeline.clip import download
from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.factory import TINY_CONFIG, register_tiny
from mote.pipeline.clip.text import TEMPLATES, class_text_embeddings, encode_tokens
from mote.pipeline.errors import ConfigError, WeightsUnavailable


def frames(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8))


def same_weights(a: ClipEncoder, b: ClipEncoder) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def sha16(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_tiny_is_small_by_construction_with_the_contract_sizes() -> None:
    # Small enough to build in well under a second on a CPU, checked by size, not by a clock:
    # 2 layers per tower of width 64; the text tower's token table (49408 x 64) dominates.
    encoder = build_clip("mote-tiny", "none", device="cpu", seed=0)
    assert len(encoder.visual.transformer.resblocks) == 2
    assert len(encoder.model.transformer.resblocks) == 2
    assert sum(p.numel() for p in encoder.visual.parameters()) == 154_624
    assert sum(p.numel() for p in encoder.model.parameters()) == 3_425_857
    assert (encoder.dim, encoder.preprocess.size) == (64, 64)
    assert encoder.weights_id == "random:seed=0" and encoder.pretrained == "none"
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    assert encoder.visual is encoder.model.visual
    assert register_tiny() == "mote-tiny"  # registering again is a no-op


def test_same_seed_same_model_other_seed_other_model() -> None:
    a, b, c = (build_clip("mote-tiny", "none", device="cpu", seed=s) for s in (5, 5, 6))
    assert same_weights(a, b) and not same_weights(a, c)
    x = frames(3)
    assert torch.equal(a.encode_frames(x), b.encode_frames(x))
    assert not torch.allclose(a.encode_frames(x), c.encode_frames(x))
    assert c.weights_id == "random:seed=6"


def test_seeded_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_clip("mote-tiny", "none", device="cpu", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_encode_frames_equals_open_clip_encode_image() -> None:
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    encoder = build_clip("mote-tiny", "none", device="cpu", seed=1)
    x = frames(4, seed=2)
    ours = encoder.encode_frames(x)
    assert ours.shape == (4, 64) and ours.dtype == torch.float32
    assert torch.isfinite(ours).all()

    transform = image_transform_v2(PreprocessCfg(**get_model_preprocess_cfg(encoder.model)), False)
    pixels = torch.stack([transform(Image.fromarray(f.numpy())) for f in x])
    with torch.no_grad():
        reference = encoder.model.encode_image(pixels, normalize=False)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours.norm(dim=-1), torch.ones(4))  # unnormalised

    with pytest.raises(ValueError, match=r"uint8 \(B, 64, 64, 3\)"):
        encoder.encode_frames(frames(1, size=32))


def test_templates_follow_spec_section_6() -> None:
    assert len(TEMPLATES) == 28 and len(set(TEMPLATES)) == 28
    assert TEMPLATES[0] == "a photo of {}."
    assert TEMPLATES[1] == "a photo of a person {}."
    assert TEMPLATES[7] == "a video of {}."
    assert TEMPLATES[14] == "a example of {}."
    assert TEMPLATES[20] == "a example of a person practicing {}."
    assert TEMPLATES[27] == "a demonstration of a person practicing {}."


def test_text_embeddings_are_the_normalised_template_mean() -> None:
    encoder = build_clip("mote-tiny", "none", device="cpu", seed=3)
    names = ["abseiling", "hurling (sport)", "massaging person's head"]
    bank = encoder.class_text_embeddings(names)
    assert bank.shape == (3, 64) and bank.dtype == torch.float32
    torch.testing.assert_close(bank.norm(dim=-1), torch.ones(3))

    manual = []
    with torch.no_grad():
        for name in names:
            tokens = encoder.tokenizer([t.format(name) for t in TEMPLATES])
            per_template = encoder.model.encode_text(tokens)
            per_template = per_template / per_template.norm(dim=-1, keepdim=True)
            mean = per_template.mean(dim=0)
            manual.append(mean / mean.norm())
    torch.testing.assert_close(bank, torch.stack(manual), atol=1e-6, rtol=1e-5)
    small_batches = class_text_embeddings(encoder.model, encoder.tokenizer, names, "cpu", batch=5)
    torch.testing.assert_close(small_batches, bank, atol=1e-6, rtol=1e-5)


def test_the_text_tower_runs_only_up_to_the_longest_prompt_with_the_same_numbers() -> None:
    """Causal attention and end-of-text pooling: the tokens after the longest prompt's end
    change nothing, so the pass stops there; a prompt that fills the context keeps all 77, and
    a tower that pools another way (here the last position) takes the full pass."""
    encoder = build_clip("mote-tiny", "none", device="cpu", seed=3)
    model = encoder.model.eval()
    lengths = []
    hook = model.transformer.register_forward_pre_hook(
        lambda _, args: lengths.append(args[0].shape[1])
    )
    short = encoder.tokenizer(["a photo of abseiling.", "a video of a person doing archery."])
    filled = encoder.tokenizer(["a person juggling " * 30])
    with torch.no_grad():
        passes = {}
        for name, tokens in (("short", short), ("filled", filled)):
            lengths.clear()
            fast = encode_tokens(model, tokens)
            full = model.encode_text(tokens)
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
            assert lengths[1] == 77  # encode_text's own pass
            passes[name] = lengths[0]
        assert passes == {"short": int(short.argmax(dim=-1).max()) + 1, "filled": 77}
        assert passes["short"] <= 12
        model.text_pool_type = "last"
        lengths.clear()
        torch.testing.assert_close(encode_tokens(model, short), model.encode_text(short))
        assert lengths == [77, 77]
    hook.remove()


def test_safetensors_file_round_trip(tmp_path: Path) -> None:
    source = build_clip("mote-tiny", "none", device="cpu", seed=11)
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file(source.model.state_dict(), str(path))
    loaded = build_clip("mote-tiny", str(path), device="cpu", seed=0)  # the seed must not matter
    assert loaded.weights_id == sha16(path)
    assert loaded.pretrained == str(path)
    assert same_weights(source, loaded)
    x = frames(2, seed=4)
    assert torch.equal(loaded.encode_frames(x), source.encode_frames(x))


def test_torch_file_with_state_dict_key_and_module_prefix(tmp_path: Path) -> None:
    source = build_clip("mote-tiny", "none", device="cpu", seed=12)
    wrapped = {
        "epoch": 3,
        "state_dict": {f"module.{k}": v for k, v in source.model.state_dict().items()},
    }
    path = tmp_path / "tiny.pt"
    torch.save(wrapped, path)
    loaded = build_clip("mote-tiny", str(path), device="cpu")
    assert same_weights(source, loaded) and loaded.weights_id == sha16(path)


def test_torchscript_archive_like_openai_releases(tmp_path: Path) -> None:
    source = build_clip("mote-tiny", "none", device="cpu", seed=14)
    path = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():  # torch.jit.script is deprecated; the file format is not
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(source.model).save(str(path))
    loaded = build_clip("mote-tiny", str(path), device="cpu")
    assert same_weights(source, loaded) and loaded.weights_id == sha16(path)


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file(
        build_clip("mote-tiny", "none", device="cpu").model.state_dict(), str(path)
    )
    config = tmp_path / "narrow.json"
    config.write_text(json.dumps({**TINY_CONFIG, "embed_dim": 32}))
    assert build_clip(str(config), "none", device="cpu").dim == 32
    with pytest.raises(ConfigError, match="does not fit model"):
        build_clip(str(config), str(path), device="cpu")


def test_local_dir_loads_config_and_weights(tmp_path: Path) -> None:
    source = build_clip("mote-tiny", "none", device="cpu", seed=13)
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {"interpolation": "bicubic"}})
    )
    weights = tmp_path / "open_clip_model.safetensors"
    safetensors.torch.save_file(source.model.state_dict(), str(weights))
    loaded = build_clip(f"local-dir:{tmp_path}", "openai", device="cpu")
    assert loaded.weights_id == sha16(weights) and loaded.dim == 64
    x = frames(2, seed=5)
    assert torch.equal(loaded.encode_frames(x), source.encode_frames(x))

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG}))
    with pytest.raises(WeightsUnavailable, match="no weights file"):
        build_clip(f"local-dir:{empty}", "openai", device="cpu")


def test_offline_tag_fails_fast_naming_model_and_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as info:
        build_clip("ViT-B-16", "openai", device="cpu")
    assert time.perf_counter() - start < 10.0
    message = str(info.value)
    assert "ViT-B-16" in message and "'openai'" in message
    assert "--pretrained /path/to/weights.safetensors" in message


def test_tag_weights_are_found_in_the_local_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--repo" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--repo" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(download, "OPENAI_CLIP_CACHE", tmp_path / "clip")
    hub_cfg = {"hf_hub": "org/repo/", "url": "https://example.invalid/x/ViT-T.pt"}
    assert download.cached_file(hub_cfg) is None
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"bin")
    assert download.cached_file(hub_cfg) == snapshot / "open_clip_pytorch_model.bin"
    (snapshot / "open_clip_model.safetensors").write_bytes(b"st")
    assert download.cached_file(hub_cfg) == snapshot / "open_clip_model.safetensors"
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-T.pt").write_bytes(b"pt")
    assert download.cached_file({"url": hub_cfg["url"]}) == tmp_path / "clip" / "ViT-T.pt"


def test_a_cached_release_file_must_match_the_sha256_in_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "OPENAI_CLIP_CACHE", tmp_path)
    content = b"weights of a release"
    digest = hashlib.sha256(content).hexdigest()
    openai_url = f"https://openaipublic.azureedge.net/clip/models/{digest}/ViT-T.pt"
    mlf_url = f"https://github.com/mlfoundations/open_clip/releases/v1/vit_t-{digest[:8]}.pt"
    (tmp_path / "ViT-T.pt").write_bytes(content)
    (tmp_path / f"vit_t-{digest[:8]}.pt").write_bytes(content)
    assert download.cached_file({"url": openai_url}) == tmp_path / "ViT-T.pt"
    assert download.cached_file({"url": mlf_url}) == tmp_path / f"vit_t-{digest[:8]}.pt"

    (tmp_path / "ViT-T.pt").write_bytes(content[:-1] + b"!")  # damaged on disk
    with pytest.raises(WeightsUnavailable, match=r"ViT-T\.pt fail their SHA256 check"):
        download.cached_file({"url": openai_url})


def test_unreachable_host_is_reported_quickly() -> None:
    start = time.perf_counter()
    assert download.unreachable("mote-probe.invalid", timeout=2.0) != ""
    assert time.perf_counter() - start < 4.0


def test_unknown_tag_and_missing_file_are_weights_errors() -> None:
    with pytest.raises(WeightsUnavailable, match="known tags for ViT-B-16: openai"):
        build_clip("ViT-B-16", "no-such-tag", device="cpu")
    with pytest.raises(WeightsUnavailable, match="file not found"):
        build_clip("mote-tiny", "/nonexistent/weights.safetensors", device="cpu")


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="did you mean ViT-B-16-quickgelu"):
        build_clip("ViT-B-16-quickgeul", "none", device="cpu")
    with pytest.raises(ConfigError, match="config file not found"):
        build_clip("missing-config.json", "none", device="cpu")
