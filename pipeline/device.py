"""Which torch device a command runs on; kept apart so training code need not import open_clip."""

from __future__ import annotations

import torch

from mote.pipeline.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; an unavailable CUDA device is a config error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device!r} is not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved
