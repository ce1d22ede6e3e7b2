"""Evaluation preprocessing (spec section 7.3): shorter-side resize, 1 or 3 crops, normalisation.

``crop_views`` runs in decode worker processes, so this module imports only numpy and PIL at
import time; torch is imported inside ``normalize`` (and ``normalize_tensors``, its
per-device cache), which runs where the model lives.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mote.pipeline.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PreprocessSpec:
    """What a CLIP checkpoint expects of its input; stored with the features it produced."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @classmethod
    def from_open_clip_cfg(cls, cfg: Mapping[str, Any]) -> PreprocessSpec:
        """From ``open_clip.get_model_preprocess_cfg(model)``, so mean/std are never retyped."""
        size = cfg["size"]
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                raise ConfigError(
                    f"open_clip preprocess size {tuple(size)} is not square; mote's crops need "
                    "a square input (choose a model with a square image_size)"
                )
            size = size[0]
        interpolation = str(cfg.get("interpolation", "bicubic"))
        if interpolation not in _PIL_FILTERS:
            raise ConfigError(
                f"open_clip preprocess interpolation {interpolation!r} is not supported; "
                f"mote supports {sorted(_PIL_FILTERS)}"
            )
        return cls(
            size=int(size),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=interpolation,
        )

    @classmethod
    def from_model(cls, model: Any) -> PreprocessSpec:
        """Read the preprocess config open_clip attached to ``model``."""
        import open_clip

        return cls.from_open_clip_cfg(open_clip.get_model_preprocess_cfg(model))


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to ``size``; the long side truncates (torchvision)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of each crop in a frame already resized to shorter side ``size``.

    One crop is the torchvision centre crop. Three crops follow spec 7.3 (left, right, centre
    at x = 0, 4*w_step, 2*w_step and y = 2*h_step), as the reference does: on a portrait frame
    w_step is 0 and the three crops coincide at the vertical centre.
    """
    if crops == 1:
        return [(int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))]
    if crops != 3:
        raise ConfigError(f"crops must be 1 or 3 (views CLIPSxCROPS), got {crops}")
    w_step = (width - size) // 4
    h_step = (height - size) // 4
    return [(2 * h_step, 0), (2 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]


def _resize_frames(frames: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """Resize every frame's shorter side to ``size`` with PIL (exact, antialiased)."""
    k, height, width, _ = frames.shape
    new_h, new_w = resized_shape(height, width, size)
    if (new_h, new_w) == (height, width):
        return frames
    out = np.empty((k, new_h, new_w, 3), dtype=np.uint8)
    resample = _PIL_FILTERS[interpolation]
    for i in range(k):
        image = Image.fromarray(frames[i])
        out[i] = np.asarray(image.resize((new_w, new_h), resample))
    return out


def crop_views(
    frames: np.ndarray, size: int, crops: int, interpolation: str = "bicubic"
) -> np.ndarray:
    """uint8 (k, H, W, 3) -> uint8 (crops, k, size, size, 3): resize shorter side, then crop."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"crop_views expects uint8 frames (k, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    if interpolation not in _PIL_FILTERS:
        raise ConfigError(f"interpolation {interpolation!r} is not one of {sorted(_PIL_FILTERS)}")
    offsets = crop_offsets(*resized_shape(frames.shape[1], frames.shape[2], size), size, crops)
    resized = _resize_frames(np.ascontiguousarray(frames), size, interpolation)
    out = np.empty((crops, frames.shape[0], size, size, 3), dtype=np.uint8)
    for c, (y, x) in enumerate(offsets):
        out[c] = resized[:, y : y + size, x : x + size]
    return out


@functools.lru_cache(maxsize=32)
def normalize_tensors(
    spec: PreprocessSpec, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 255, mean (3, 1, 1) and std (3, 1, 1) on ``device``, built once per (spec, device).

    Built per call they were a blocking host-to-device copy per batch on CUDA. 255 is a device
    tensor too: CUDA turns a division by a Python number into a multiplication by its
    reciprocal (1 ulp off for half the pixel values), so a clip normalised on the GPU equals one
    normalised on the CPU only when every divisor is a tensor. Made outside inference mode (the
    cache serves training too) and never written to.
    """
    import torch

    with torch.inference_mode(False):
        scale = torch.tensor(255.0, dtype=torch.float32, device=device)
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(3, 1, 1)
    return scale, mean, std


def normalize(x: torch.Tensor, spec: PreprocessSpec, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> ``dtype`` (..., 3, S, S) as (x / 255 - mean) / std, in fp32 first.

    Runs where ``x`` is (training clips: on the model's device), with the cached
    ``normalize_tensors``; the same fp32 values on every device.
    """
    import torch

    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(
            f"normalize expects a uint8 tensor (..., S, S, 3), got {x.dtype} {x.shape}"
        )
    scale, mean, std = normalize_tensors(spec, x.device)
    chw = x.movedim(-1, -3).to(torch.float32).div_(scale)
    return chw.sub_(mean).div_(std).to(dtype).contiguous()
