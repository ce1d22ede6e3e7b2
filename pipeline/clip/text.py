"""Class text embeddings: the 28-template prompt ensemble of spec section 6."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

_PREFIXES = ("a photo of", "a video of", "a example of", "a demonstration of")
_BODIES = (
    "{}.",
    "a person {}.",
    "a person using {}.",
    "a person doing {}.",
    "a person during {}.",
    "a person performing {}.",
    "a person practicing {}.",
)
# Prefix-major order: template 1 is "a photo of {}.", 8 "a video of {}.", 28 the last body of
# "a demonstration of". "a example of" is the paper's wording, kept verbatim.
TEMPLATES: tuple[str, ...] = tuple(f"{prefix} {body}" for prefix in _PREFIXES for body in _BODIES)


def class_text_embeddings(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    names: Sequence[str],
    device: torch.device | str,
    batch: int = 1024,
) -> torch.Tensor:
    """float32 (C, D) on CPU: per template L2-normalise, average over templates, renormalise.

    Runs the text tower in fp32 under no_grad (autocast off), whatever the device.
    """
    if len(names) == 0:
        raise ValueError("class_text_embeddings needs at least one class name")
    prompts = [template.format(name) for name in names for template in TEMPLATES]
    device = torch.device(device)
    chunks = []
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, len(prompts), batch):
            tokens = tokenizer(prompts[start : start + batch]).to(device)
            feats = model.encode_text(tokens, normalize=False).float()
            chunks.append(torch.nn.functional.normalize(feats, dim=-1))
    per_template = torch.cat(chunks).view(len(names), len(TEMPLATES), -1)  # (C, 28, D)
    mean = per_template.mean(dim=1)
    return torch.nn.functional.normalize(mean, dim=-1).cpu()
