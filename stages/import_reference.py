"""``mote import-reference``: turn a reference MoTE checkpoint into a mote run folder.

Flow: read the checkpoint (``weights_only``, nothing executed), rebuild the temporal module with
every key and shape checked, check the CLIP visual weights against the ``--model`` architecture,
then write the run folder's model file (MoTE state dict incl. ``logit_scale`` and the K400 text
bank ``finetune_text``; plus ``clip.visual.*`` unless ``head_only``) and config. With
``head_only`` evaluation uses the ``--pretrained`` CLIP visual weights instead of the fine-tuned
ones; the run records which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from mote.cache_schema.claim import CLAIM_FILE
from mote.pipeline.clip.weights_id import file_weights_id
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.reference_import import (
    CLIP_KEY,
    TEMPORAL_KEY,
    load_reference_checkpoint,
    temporal_from_reference,
    visual_from_reference,
)
from mote.pipeline.runs.run_config import RunClip, RunConfig
from mote.pipeline.runs.run_folder import CLIP_PREFIX, RunFolder
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.threads import command_threads
from mote.stages.configs.import_reference_config import ImportReferenceConfig  # noqa: F401


def _check_new(out: Path) -> None:
    """``--out`` is new or an empty folder (a run's claim file aside)."""
    if out.exists() and (
        not out.is_dir() or any(entry.name != CLAIM_FILE for entry in out.iterdir())
    ):
        raise ConfigError(f"--out {out}: already exists and is not an empty folder; pick a new one")


@command_threads()
def run(cfg: ImportReferenceConfig) -> dict:
    """Write the run folder ``cfg.out``; return what ``--json`` prints."""
    ckpt, out = Path(cfg.ckpt), Path(cfg.out)
    head_only, model, pretrained = cfg.head_only, cfg.model, cfg.pretrained
    _check_new(out)
    ref = load_reference_checkpoint(ckpt)
    clip_state = visual_from_reference(ref[CLIP_KEY])
    cfg, state, bank = temporal_from_reference(
        ref[TEMPORAL_KEY], logit_scale=clip_state.pop("logit_scale", None)
    )
    check_visual(clip_state, model, cfg.dim, ckpt)
    temporal = MoTE(cfg)
    temporal.load_state_dict(state, strict=True)
    extra: dict[str, Tensor] = {}
    if not head_only:
        extra = {CLIP_PREFIX + k: _float32(v) for k, v in clip_state.items()}
    folder = RunFolder(out)
    with folder.writer_claim(True):  # one writer: a second import into --out is refused
        _check_new(out)  # again under the claim: another import may have finished meanwhile
        folder.create()
        folder.save_model(temporal, extra)
        folder.write_config(
            RunConfig(
                source="import-reference",
                model=cfg,
                clip=RunClip(
                    model=model,
                    pretrained=pretrained,
                    weights_id=_weights_id(pretrained) if head_only else None,
                ),
                params_merged=temporal.num_params(merged=True),
                params_train=temporal.num_params(merged=False),
                details={
                    "checkpoint": str(ckpt),
                    "epoch": ref["epoch"],
                    "head_only": head_only,
                    "clip_weights": "pretrained" if head_only else "checkpoint",
                    "finetune_classes": int(bank.shape[0]),
                },
            )
        )
    return {
        "out": str(out),
        "arch": cfg.arch,
        "dim": cfg.dim,
        "layers": cfg.layers,
        "experts": temporal.architecture.n_experts(cfg),
        "heads": cfg.heads,
        "epoch": ref["epoch"],
        "finetune_classes": int(bank.shape[0]),
        "clip_tensors": len(extra),
        "head_only": head_only,
        "params_merged": temporal.num_params(merged=True),
        "params_train": temporal.num_params(merged=False),
    }


def check_visual(visual: dict[str, Tensor], model: str, dim: int, ckpt: Path) -> None:
    """The checkpoint's visual tower must be the ``--model`` architecture with output width D,
    or evaluation would build one CLIP and load another's weights. (open_clip is imported
    here: a checkpoint without visual weights never needs it.)"""
    import open_clip

    from mote.pipeline.clip.factory import TINY_CONFIG, TINY_NAME

    cfg = TINY_CONFIG if model == TINY_NAME else open_clip.get_model_config(model)
    if cfg is None:
        raise ConfigError(
            f"--model {model!r} is not an open_clip model name; the released checkpoints are "
            "ViT-B-16 (MoTE_B16.pt) and ViT-L-14 (MoTE_L14.pt)"
        )
    vision = cfg["vision_cfg"]
    patch, width, size = vision["patch_size"], vision["width"], vision["image_size"]
    found = {
        "embedding width": _shape(visual, "visual.proj", 1),
        "visual width": _shape(visual, "visual.conv1.weight", 0),
        "patch size": _shape(visual, "visual.conv1.weight", 3),
        "visual layers": len(
            {k.split(".")[3] for k in visual if k.startswith("visual.transformer.resblocks.")}
        ),
        "positions": _shape(visual, "visual.positional_embedding", 0),
    }
    want = {
        "embedding width": cfg["embed_dim"],
        "visual width": width,
        "patch size": patch,
        "visual layers": vision["layers"],
        "positions": (size // patch) ** 2 + 1,
    }
    wrong = [f"{k} {found[k]} vs {want[k]}" for k in want if found[k] != want[k]]
    if cfg["embed_dim"] != dim:
        wrong.append(f"temporal module width {dim} vs {cfg['embed_dim']}")
    if wrong:
        raise ConfigError(
            f"{ckpt}: its CLIP weights do not fit --model {model} ({'; '.join(wrong)}); "
            "pass --model ViT-B-16 for MoTE_B16.pt or ViT-L-14 for MoTE_L14.pt"
        )


def _shape(state: dict[str, Tensor], key: str, axis: int) -> Any:
    tensor = state.get(key)
    return None if tensor is None or tensor.ndim <= axis else int(tensor.shape[axis])


def _weights_id(pretrained: str) -> str:
    """The identity ``build_clip`` gives these weights, so stores can be matched to the run."""
    if pretrained.strip().lower() == "none":
        return "random:seed=0"
    if Path(pretrained).is_file():
        return file_weights_id(pretrained)
    return pretrained


def _float32(t: Tensor) -> Tensor:
    return t.float().contiguous() if t.is_floating_point() else t.contiguous()
