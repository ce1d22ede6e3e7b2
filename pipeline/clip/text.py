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
            feats = encode_tokens(model, tokens).float()
            chunks.append(torch.nn.functional.normalize(feats, dim=-1))
    per_template = torch.cat(chunks).view(len(names), len(TEMPLATES), -1)  # (C, 28, D)
    mean = per_template.mean(dim=1)
    return torch.nn.functional.normalize(mean, dim=-1).cpu()


def encode_tokens(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (unnormalised), computed only up to the longest prompt's
    end of text where that gives the same numbers.

    CLIP's text tower pads every prompt to 77 tokens, but its attention is causal and it pools
    the end-of-text token (the largest id), so nothing after the longest prompt's end reaches
    the result: a class prompt is ~10-20 tokens, a 4-8x smaller pass (K400's 400 x 28
    prompts, the shipped vocabulary's 747 x 28). Other towers (no causal mask, other pooling,
    custom text models) take the full pass.
    """
    if not _truncatable(model):
        return model.encode_text(tokens, normalize=False)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _truncatable(model: Any) -> bool:
    """An open_clip ``CLIP`` whose text tower is causal and pools the end-of-text token."""
    mask = getattr(model, "attn_mask", None)
    return (
        getattr(model, "text_pool_type", None) == "argmax"
        and isinstance(mask, torch.Tensor)
        and mask.dim() == 2
        and all(
            hasattr(model, name)
            for name in ("token_embedding", "positional_embedding", "transformer", "ln_final")
        )
    )
