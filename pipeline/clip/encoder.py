"""``ClipEncoder``: a built CLIP with the facts a feature store records, encoding frames and text.

Frames go in as uint8 crops and are normalised on the device with the model's own mean/std, so
decoding workers never need to know them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import open_clip
import torch

from mote.pipeline.clip import text as text_mod
from mote.pipeline.video.transforms import PreprocessSpec, normalize


class ClipEncoder:
    """A built CLIP with the facts a feature store records about it.

    ``model`` is the whole open_clip model in fp32; ``visual`` is its image tower, kept trainable
    for end-to-end fine-tuning. On CUDA, ``encode_frames`` runs an fp16 snapshot of ``visual``
    taken at its first call (1.4x the throughput of autocast on an H200, same embeddings to
    cosine 0.999999); after training ``visual``, call ``refresh_inference_copy()``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        pretrained: str,
        weights_id: str,
        dim: int,
        arch: str,
        device: torch.device,
    ) -> None:
        self.model = model
        self.visual = model.visual
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_id = weights_id
        self.dim = dim
        self.preprocess = PreprocessSpec.from_model(model)
        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self._arch = arch
        self._tokenizer: Any = None
        self._visual_copy: torch.nn.Module | None = None

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(model_name={self.model_name!r}, weights_id={self.weights_id!r}, "
            f"dim={self.dim}, size={self.preprocess.size}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this architecture, made on first use."""
        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self._arch)
        return self._tokenizer

    def encode_frames(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> float32 (B, D) on ``device``: unnormalised projected embeddings."""
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.ascontiguousarray(x))
        size = self.preprocess.size
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"encode_frames expects uint8 (B, {size}, {size}, 3) for {self.model_name}, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        return self.encode_device_frames(x.to(self.device, non_blocking=True))

    def encode_device_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``encode_frames`` of uint8 frames already on ``device`` (``staging``'s copy)."""
        visual = self._inference_visual()
        with torch.inference_mode():
            pixels = normalize(x, self.preprocess, self.dtype)  # (B, 3, S, S)
            features = visual(pixels)  # (B, D), = encode_image(normalize=False)
        return features.float()

    def refresh_inference_copy(self) -> None:
        """Drop the fp16 snapshot so the next ``encode_frames`` sees the current ``visual``."""
        self._visual_copy = None

    def _inference_visual(self) -> torch.nn.Module:
        if self.dtype == torch.float32:
            return self.visual
        if self._visual_copy is None:
            frozen = copy.deepcopy(self.visual).to(self.dtype).eval()
            self._visual_copy = frozen.requires_grad_(False)
        return self._visual_copy

    def class_text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """float32 (C, D) on CPU: the 28-template ensemble of spec section 6."""
        return text_mod.class_text_embeddings(self.model, self.tokenizer, names, self.device)
