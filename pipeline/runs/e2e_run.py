"""An end-to-end model and its run folder: warm start from a ``train-temporal`` run, save the
tuned model so every cache-run command (extract --run, evaluate, zeroshot, report) reads it.

The model file is a train-temporal model file (MoTE state dict with ``logit_scale`` and the
frozen ``finetune_text``) plus the tuned visual tower as ``clip.visual.*``, the layout
``import-reference`` writes; ``run_clip.py`` blends it 0.99/0.01 with the original at test time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_config import RunClip, RunConfig
from mote.pipeline.runs.run_folder import CLIP_PREFIX, RunFolder
from mote.pipeline.temporal.e2e import EndToEnd, check_warm_start


def save_end_to_end(folder: RunFolder, model: EndToEnd, best: bool = False) -> None:
    """``model.safetensors`` (or the best file): temporal module + logit_scale + text bank,
    and the tuned visual tower under ``clip.`` in fp32."""
    visual = {CLIP_PREFIX + k: v.float() for k, v in model.visual_state().items()}
    folder.save_model(model.temporal, visual, best=best)


def run_config(model: EndToEnd, details: Mapping[str, Any], **fields: Any) -> RunConfig:
    """A finetune-e2e run's record: the model's facts (what ``load_run``, ``run_clip`` (the CLIP
    to rebuild and blend), ``evaluate`` (classes) and ``report`` read), the command's other
    ``details`` and any other ``RunConfig`` ``fields`` (settings, sampling, tool version)."""
    model_facts = {
        "clip_weights": "tuned",
        "finetune_classes": int(model.class_text.shape[0]),
        "params_visual": model.num_visual_params(),
    }
    return RunConfig(
        source="finetune-e2e",
        model=model.temporal.cfg,
        clip=RunClip(**dataclasses.asdict(model.clip)),
        classes=tuple(model.class_names),
        params_merged=model.temporal.num_params(merged=True),
        # trained end to end: the temporal module and the tuned visual tower
        params_train=model.temporal.num_params(merged=False) + model_facts["params_visual"],
        details={**model_facts, **details},
        **fields,
    )


def warm_start(model: EndToEnd, run: Path | str, best: bool = False) -> dict:
    """Load the temporal module and ``logit_scale`` of a ``train-temporal`` run (``--init-run``).

    The run's module must have this one's shape (width, arch, heads, layers, experts) and come
    from the same CLIP architecture; its text bank is not taken (the model keeps its own).
    Returns what was loaded, for the run's config.
    """
    folder = RunFolder(run)
    source, _ = folder.load_model(best=best)
    config = folder.read_config()
    built_on = config.clip.model
    if built_on and built_on != model.clip.model:
        raise ConfigError(
            f"--init-run {run}: trained on {built_on} features but this run tunes "
            f"{model.clip.model}; use a train-temporal run on a store of --model {model.clip.model}"
        )
    check_warm_start(model.temporal.cfg, source.cfg, run)
    state = {k: v for k, v in source.state_dict().items() if k != "finetune_text"}
    device = model.logit_scale.device
    with torch.no_grad():
        missing, unexpected = model.temporal.load_state_dict(
            {k: v.to(device) for k, v in state.items()}, strict=False
        )
    if unexpected or set(missing) - {"finetune_text"}:
        raise ConfigError(
            f"--init-run {run}: weights {sorted(unexpected or missing)[:3]} do not fit"
        )
    return {
        "run": str(run),
        "weights": folder.best_file.name if best else folder.model_file.name,
        "clip_weights_id": config.clip.weights_id,
        "logit_scale": float(source.logit_scale.detach()),
    }
