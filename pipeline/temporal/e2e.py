"""End-to-end model of ``mote finetune-e2e``: CLIP's visual tower, the MoTE temporal module and
the frozen class text bank, trained together as the reference does (spec 6, 7, 13.7).

Only the image tower is kept: the class text is encoded once from the 28 templates (or taken
from a feature store made with the same CLIP) and the text tower is then dropped, so a ViT-L/14
run does not carry 123M frozen text weights on the GPU. Weights stay fp32 (the master copy);
mixed precision is the training loop's autocast.

Parameter groups (spec 7): ``temporal`` = the temporal module at the base lr; ``clip`` = every
visual weight plus ``logit_scale`` (held by the MoTE module) at lr x 0.07 (B/16) / 0.06 (L/14).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.weights import RANDOM_TAG
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config
from mote.pipeline.video.transforms import PreprocessSpec, normalize

# MoTEConfig fields that fix the module's shape or function: a warm start must match them.
SHAPE_FIELDS = ("dim", "arch", "heads", "layers", "experts", "context")


@dataclasses.dataclass(frozen=True)
class ClipFacts:
    """What a run records about the CLIP it tuned (``config.json`` "clip"; ``run_clip.py``
    rebuilds the original from these for the 0.99/0.01 test-time blend)."""

    model: str
    pretrained: str
    weights_id: str
    dim: int

    @classmethod
    def of(cls, clip: ClipEncoder) -> ClipFacts:
        return cls(clip.model_name, clip.pretrained, clip.weights_id, clip.dim)


class EndToEnd(nn.Module):
    """CLIP visual tower + MoTE + frozen class text; ``forward`` is ``training_losses`` (so every
    training pass goes through the one module whose gradients the ranks sum)."""

    def __init__(
        self,
        visual: nn.Module,
        temporal: MoTE,
        text: Tensor,
        preprocess: PreprocessSpec,
        clip: ClipFacts,
        class_names: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if temporal.cfg.dim != clip.dim:
            raise ConfigError(
                f"temporal module width {temporal.cfg.dim} does not match {clip.model}'s "
                f"embedding width {clip.dim}; build it with default_config({clip.dim})"
            )
        self.visual = visual.float().train().requires_grad_(True)
        self.temporal = temporal
        self.preprocess = preprocess
        self.clip = clip
        self.class_names = tuple(class_names)
        self.register_buffer("class_text", torch.zeros(0, clip.dim))
        self.set_class_text(text)

    # -- text ----------------------------------------------------------------------------------

    def set_class_text(self, text: Tensor) -> None:
        """The frozen class bank (C, D): unit rows, float32, a buffer (no gradient, no decay).
        It is also the temporal module's ``finetune_text``, the bank TFM needs (spec 13.7)."""
        if text.ndim != 2 or text.shape[1] != self.clip.dim:
            raise ConfigError(
                f"class text bank has shape {tuple(text.shape)}; expected (classes, "
                f"{self.clip.dim}) for {self.clip.model}"
            )
        if self.class_names and text.shape[0] != len(self.class_names):
            raise ConfigError(
                f"class text bank has {text.shape[0]} rows for {len(self.class_names)} classes"
            )
        device = self.temporal.logit_scale.device
        self.class_text = F.normalize(text.detach().float(), dim=-1).to(device)
        self.temporal.set_finetune_text(text)  # the same normalisation, bit for bit

    # -- switches ------------------------------------------------------------------------------

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's trainable logit scale; the MoTE module holds it (it saves with the run)."""
        return self.temporal.logit_scale

    def set_grad_checkpointing(self, on: bool = True) -> None:
        """Recompute each CLIP block in the backward pass (open_clip's own switch): activation
        memory falls from O(blocks) to O(1) blocks; the numerics do not change (spec 7)."""
        self.visual.set_grad_checkpointing(on)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"temporal": the temporal module, "clip": every visual weight + logit_scale}."""
        scale = self.temporal.logit_scale
        temporal = [
            p for n, p in self.temporal.named_parameters() if p is not scale and p.requires_grad
        ]
        clip = [p for p in self.visual.parameters() if p.requires_grad] + [scale]
        return {"temporal": temporal, "clip": clip}

    # -- passes --------------------------------------------------------------------------------

    def encode_frames(self, frames: Tensor) -> Tensor:
        """(B, T, 3, S, S) normalised floats, or uint8 (B, T, S, S, 3) -> float32 (B, T, D).

        uint8 clips (what ``ClipDataset`` gives) are normalised here with the model's mean/std,
        on the model's device (a quarter of the bytes of float clips cross the bus). Unnormalised
        projected embeddings, as the store holds them.
        """
        size = self.preprocess.size
        if frames.dtype == torch.uint8 and frames.ndim == 5 and frames.shape[-1] == 3:
            frames = normalize(
                frames.to(self.class_text.device, non_blocking=True), self.preprocess, torch.float32
            )
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (3, size, size):
            raise ConfigError(
                f"clips of shape {tuple(frames.shape)} {frames.dtype} do not fit {self.clip.model}"
                f": expected (B, T, 3, {size}, {size}) floats or uint8 (B, T, {size}, {size}, 3)"
            )
        b, t = frames.shape[:2]
        features = self.visual(frames.flatten(0, 1))  # (B*T, D)
        return features.float().view(b, t, -1)

    def training_losses(
        self,
        frames: Tensor,
        labels: Tensor,
        generator: torch.Generator | None = None,
        *,
        experts: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
    ) -> dict[str, Tensor]:
        """Spec 4.4 losses on raw clips: ``MoTE.training_losses`` on the tower's frame features
        with the frozen text bank. Keys "total", "ce", "wmr", "mse", "logits"."""
        e = self.encode_frames(frames)
        return self.temporal.training_losses(
            e, labels, self.class_text, generator, experts=experts, temperatures=temperatures
        )

    def forward(
        self, frames: Tensor, labels: Tensor, generator: torch.Generator | None = None, **kw: Any
    ) -> dict[str, Tensor]:
        return self.training_losses(frames, labels, generator, **kw)

    @torch.no_grad()
    def predict(
        self, frames: Tensor, tfm: bool = False, amp: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Validation: cosine logits (B, C) (no scale) and rho (B,), merged experts, the
        un-blended weights. fp32 unless ``amp`` (spec 7: evaluation runs in fp32)."""
        was_training = self.training
        self.eval()
        device = self.class_text.device
        off = contextlib.nullcontext() if amp else torch.autocast(device.type, enabled=False)
        try:
            with off:
                e = self.encode_frames(frames)
                return self.temporal.predict(e, self.class_text, tfm=tfm)
        finally:
            self.train(was_training)

    # -- what a run saves ----------------------------------------------------------------------

    def visual_state(self) -> dict[str, Tensor]:
        """The tuned tower as ``visual.*`` tensors, the names of open_clip's full model (a run's
        model file stores them under ``clip.``)."""
        return {f"visual.{k}": v.detach() for k, v in self.visual.state_dict().items()}

    def num_visual_params(self) -> int:
        return sum(p.numel() for p in self.visual.parameters())


# ---------------------------------------------------------------------------------------------
# building


def text_from_store(
    store: Path | Url,
    clip: ClipFacts | ClipEncoder,
    class_names: Sequence[str],
    storage_options: dict[str, Any] | None = None,
) -> Tensor:
    """A store's class text embeddings (C, D), accepted only when the store was made by the
    same CLIP weights and lists the same classes in the same order (``--text-from``); a store
    at a URL is read with ``storage_options``."""
    facts = clip if isinstance(clip, ClipFacts) else ClipFacts.of(clip)
    opened = FeatureStore.open(store, storage_options=storage_options)
    opened.require_labels("finetune-e2e --text-from")
    spec = opened.spec
    for key, want in (("model", facts.model), ("weights_id", facts.weights_id)):
        have = getattr(spec, key)
        if have != want:
            raise ConfigError(
                f"--text-from {store}: its {key} is {have!r} but the CLIP being tuned has "
                f"{want!r}; use a store extracted with --model {facts.model} --pretrained "
                f"{facts.pretrained}, or drop --text-from"
            )
    names = list(class_names)
    if list(spec.class_names) != names:
        first = next(
            (i for i, (a, b) in enumerate(zip(spec.class_names, names, strict=False)) if a != b),
            min(len(names), len(spec.class_names)),
        )
        raise ConfigError(
            f"--text-from {store}: its {len(spec.class_names)} classes differ from the dataset's "
            f"{len(names)} (first difference at class {first}); use a store of the same "
            "classes, or drop --text-from"
        )
    text = torch.from_numpy(np.array(opened.text_embeddings)).float()
    if text.shape != (len(names), facts.dim):
        raise ConfigError(
            f"--text-from {store}: text bank shape {tuple(text.shape)}, expected "
            f"({len(names)}, {facts.dim})"
        )
    return text


def build_end_to_end(
    model: str,
    pretrained: str,
    class_names: Sequence[str],
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    config: MoTEConfig | Callable[[int], MoTEConfig] | None = None,
    text_from: Path | Url | None = None,
    storage_options: dict[str, Any] | None = None,
) -> EndToEnd:
    """Build CLIP, encode the class text once (or read it from the store ``text_from``, a URL
    read with ``storage_options``), keep only the
    visual tower; the temporal module is ``config`` (or a function of the width D, or
    ``default_config(D)``), initialised from ``seed``.

    ``logit_scale`` starts at CLIP's pretrained value (spec 6); with random CLIP weights
    (``--pretrained none``) at the config's ln 100.
    """
    clip = build_clip(model, pretrained, str(device), seed)
    facts = ClipFacts.of(clip)
    text = (
        text_from_store(text_from, facts, class_names, storage_options)
        if text_from is not None
        else clip.class_text_embeddings(list(class_names))
    )
    if config is None:
        cfg = default_config(facts.dim)
    elif isinstance(config, MoTEConfig):
        cfg = config
    else:
        cfg = config(facts.dim)
    if pretrained.strip().lower() != RANDOM_TAG and hasattr(clip.model, "logit_scale"):
        cfg = dataclasses.replace(cfg, logit_scale_init=float(clip.model.logit_scale.detach()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        temporal = MoTE(cfg)
    visual, preprocess = clip.model.visual, clip.preprocess
    del clip  # the text tower goes with it
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return EndToEnd(
        visual, temporal.to(next(visual.parameters()).device), text, preprocess, facts, class_names
    )


def check_warm_start(own: MoTEConfig, run_cfg: MoTEConfig, run: Path | str) -> None:
    """A temporal module can take a run's weights only if it has the same shape and function."""
    wrong = [
        f"{name} {getattr(run_cfg, name)} vs {getattr(own, name)}"
        for name in SHAPE_FIELDS
        if getattr(run_cfg, name) != getattr(own, name)
    ]
    if wrong:
        flags = " ".join(
            f"--{name} {getattr(run_cfg, name)}" for name in SHAPE_FIELDS[1:] if name != "context"
        )
        raise ConfigError(
            f"--init-run {run}: its temporal module does not fit this one ({'; '.join(wrong)}, "
            f"run vs this); pass {flags} or use a run of this CLIP width"
        )
