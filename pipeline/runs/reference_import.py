"""Read checkpoints of the reference implementation (ZMHH-H/MoTE) into mote's model (spec 14).

The released files (``MoTE_B16.pt``, ``MoTE_L14.pt``) and every ``last_model.pt`` /
``model_best.pt`` the reference writes are one dict: ``epoch``, ``model_state_dict`` (CLIP visual
tower in OpenAI naming + ``logit_scale``), ``fusion_model_state_dict`` (the temporal module +
``spe_cls_feature``, the K400 text bank) and ``optimizer_state_dict`` (ignored). mote's parameter
names mirror the temporal module's, so importing is a checked copy: every key and every shape is
compared with a freshly built ``MoTE`` before anything is returned (as nanoGPT's
``from_pretrained`` does). Checkpoints of the reference's single-FFN baseline (``mlp.c_fc`` /
``mlp.c_proj``) import as arch "transformer", and ones without a temporal module as "meanpool".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mote.pipeline.errors import ConfigError, torch_load_reason
from mote.pipeline.safe_load import load_weights_only
from mote.pipeline.temporal.arch_names import MEANPOOL, MOTE, TRANSFORMER
from mote.pipeline.temporal.architectures import get_architecture
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config

CLIP_KEY = "model_state_dict"
TEMPORAL_KEY = "fusion_model_state_dict"
EXPECTED_KEYS = ("epoch", CLIP_KEY, TEMPORAL_KEY, "optimizer_state_dict")
REQUIRED_KEYS = (CLIP_KEY, TEMPORAL_KEY)
TEXT_BANK_KEY = "spe_cls_feature"
POSITION_KEY = "frame_position_embeddings.weight"
_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.")
_EXPERT = re.compile(r"^transformer\.resblocks\.\d+\.mlp\.fc_up\.(\d+)\.weight$")
_BASELINE_RENAMES = (("mlp.c_fc.", "mlp.fc_up.0."), ("mlp.c_proj.", "mlp.fc_dn.0."))


def strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefixes that data-parallel training adds to every key."""
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def load_reference_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``epoch`` and its two state dicts (prefix-free); nothing is executed
    (``weights_only``). Another layout raises ConfigError naming what was expected and found."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such checkpoint file; pass a reference MoTE checkpoint such as "
            "MoTE_B16.pt or MoTE_L14.pt"
        )
    if path.suffix.lower() == ".safetensors":
        raise ConfigError(
            f"{path}: a safetensors file, not a reference checkpoint (a pickled .pt dict with "
            f"{list(REQUIRED_KEYS)}); a mote run folder needs no import, pass it with --run"
        )
    try:
        obj = load_weights_only(path, "a reference MoTE checkpoint")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same to the user
        raise ConfigError(
            f"{path}: cannot be read as a torch checkpoint ({torch_load_reason(exc)}); "
            "expected a reference MoTE "
            f"checkpoint with keys {list(EXPECTED_KEYS)}"
        ) from exc
    found = sorted(map(str, obj)) if isinstance(obj, dict) else []
    if not isinstance(obj, dict) or not all(key in obj for key in REQUIRED_KEYS):
        shown = found[:12] + ([f"... {len(found) - 12} more"] if len(found) > 12 else [])
        raise ConfigError(
            f"{path}: not a reference MoTE checkpoint: expected top-level keys "
            f"{list(EXPECTED_KEYS)} (at least {list(REQUIRED_KEYS)}), found "
            f"{shown if isinstance(obj, dict) else type(obj).__name__}"
        )
    out: dict[str, Any] = {"epoch": obj.get("epoch")}
    for key in REQUIRED_KEYS:
        state = obj[key]
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ConfigError(f"{path}: {key!r} is not a state dict of tensors")
        out[key] = strip_module_prefix(state)
    return out


def temporal_from_reference(
    fusion_state: dict[str, Tensor], logit_scale: Tensor | float | None = None
) -> tuple[MoTEConfig, dict[str, Tensor], Tensor]:
    """(config, state dict for ``MoTE(config)`` under strict loading, K400 text bank [C, D]).

    D and the table rows come from the positional table, L from the block indices, N from the
    experts (heads are not stored: D // 64, as the reference derives them from the text width).
    ``logit_scale`` is the CLIP one from ``model_state_dict``; without it ln(100) is used.
    """
    state = {k: v.float() for k, v in strip_module_prefix(fusion_state).items()}
    bank = state.pop(TEXT_BANK_KEY, None)
    cfg = _infer_config(state, bank)
    arch = get_architecture(cfg.arch)
    if not (arch.pools_only or arch.routes_experts):  # the baseline's single FFN
        state = _expert_naming(state, cfg.layers)
    dim = cfg.dim
    bank = torch.zeros(0, dim) if bank is None else bank
    scale = cfg.logit_scale_init if logit_scale is None else logit_scale
    state["logit_scale"] = torch.as_tensor(scale, dtype=torch.float32).reshape(())
    state["finetune_text"] = bank
    _check_against_model(cfg, state)
    return cfg, state, bank


def visual_from_reference(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The fine-tuned CLIP visual tower (``visual.*``, OpenAI naming, as open_clip's ``openai``
    models use) and ``logit_scale``, from the checkpoint's ``model_state_dict``."""
    state = strip_module_prefix(model_state)
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise ConfigError(
            f"{CLIP_KEY} holds no visual.* weights (found {sorted(state)[:8]}); expected the "
            "CLIP visual tower in OpenAI naming (visual.conv1.weight, visual.proj, ...)"
        )
    if "logit_scale" in state:
        visual["logit_scale"] = state["logit_scale"]
    return visual


# ---------------------------------------------------------------------------------------------


def _infer_config(state: dict[str, Tensor], bank: Tensor | None) -> MoTEConfig:
    """The architecture the shapes describe (spec 14 layout)."""
    if POSITION_KEY not in state:
        if any(_LAYER.match(k) for k in state) or bank is None or bank.ndim != 2:
            raise ConfigError(
                f"{TEMPORAL_KEY} has no {POSITION_KEY} (found {sorted(state)[:8]}); expected the "
                "reference's temporal module (spec 14)"
            )
        return default_config(int(bank.shape[1]), arch=MEANPOOL)  # reference vid_head "None"
    context, dim = (int(n) for n in state[POSITION_KEY].shape)
    layers = len({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    experts = len({int(m.group(1)) for k in state if (m := _EXPERT.match(k))})
    if layers == 0:
        raise ConfigError(f"{TEMPORAL_KEY} has a positional table but no transformer.resblocks.*")
    if experts == 0 and "transformer.resblocks.0.mlp.c_fc.weight" in state:
        return default_config(dim, arch=TRANSFORMER, layers=layers, experts=1, context=context)
    if experts == 0:
        raise ConfigError(
            f"{TEMPORAL_KEY} has neither experts (mlp.fc_up.{{i}}) nor a single FFN (mlp.c_fc)"
        )
    return default_config(dim, arch=MOTE, layers=layers, experts=experts, context=context)


def _expert_naming(state: dict[str, Tensor], layers: int) -> dict[str, Tensor]:
    """The baseline's ``mlp.c_fc`` / ``mlp.c_proj`` as mote's single expert 0."""
    out = {}
    for key, value in state.items():
        for old, new in _BASELINE_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    for layer in range(layers):
        out.setdefault(f"transformer.resblocks.{layer}.mlp.mote_fusion_weight", torch.zeros(1))
    return out


def _check_against_model(cfg: MoTEConfig, state: dict[str, Tensor]) -> None:
    """Every key and shape must match ``MoTE(cfg)``, so strict loading cannot fail later."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in MoTE(cfg).state_dict().items()}
    want["finetune_text"] = tuple(state["finetune_text"].shape)  # any row count loads
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {want[k]}"
        for k in sorted(set(want) & set(state))
        if tuple(state[k].shape) != want[k]
    ]
    if missing or unexpected or shapes:
        experts = get_architecture(cfg.arch).n_experts(cfg)
        raise ConfigError(
            f"{TEMPORAL_KEY} does not match a MoTE of dim {cfg.dim}, {cfg.layers} layers, "
            f"{experts} experts: missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"shape mismatches {shapes[:6]}"
        )
