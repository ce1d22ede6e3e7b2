"""Regenerate tests/data/goldens.safetensors (run from the repo root after a deliberate change):

    HF_HUB_OFFLINE=1 python tests/data/make_goldens.py

The goldens pin mote-tiny's seeded weights, the preprocessing (crop, normalise), the text
ensemble and the MoTE forward (routed, merged, WMR, TFM) on fixed inputs, so an accidental
change to any of them fails tests/test_goldens.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

GOLDENS = Path(__file__).with_name("goldens.safetensors")
CLASSES = ("circle moving left", "square approaching", "a person juggling")


def frames() -> np.ndarray:
    """Four 48x64 RGB frames: gradients and a bright square, deterministic."""
    y, x = np.mgrid[0:48, 0:64]
    out = np.zeros((4, 48, 64, 3), np.uint8)
    for i in range(4):
        out[i, ..., 0] = (x * 4 + i * 20) % 256
        out[i, ..., 1] = (y * 5) % 256
        out[i, 10 + i * 5 : 26 + i * 5, 20:36, 2] = 255
    return out


def compute() -> dict[str, torch.Tensor]:
    from mote.pipeline.clip.build import build_clip
    from mote.pipeline.temporal.mote_model import MoTE
    from mote.pipeline.temporal.temporal_config import default_config
    from mote.pipeline.video.transforms import crop_views

    clip = build_clip("mote-tiny", "none", device="cpu", seed=0)
    views = crop_views(frames(), clip.preprocess.size, 3)  # (3 crops, 4 frames, S, S, 3)
    images = torch.from_numpy(views.reshape(-1, *views.shape[2:]))
    embeddings = clip.encode_frames(images).float()
    text = clip.class_text_embeddings(CLASSES).float()

    torch.manual_seed(0)
    model = MoTE(default_config(64, layers=2)).eval()
    model.set_finetune_text(text)
    e = embeddings.reshape(3, 4, 64)  # 3 clips of 4 frames
    with torch.no_grad():
        routed = model.forward_features(e, mode="routed", experts=[3, 1])
        wmr = model.forward_features(e, mode="wmr", temperatures=[0.6, -2.4])
        merged = model.forward_features(e, mode="merged")
        logits, rho = model.predict(e, torch.flip(text, dims=[0]), tfm=True)
    return {
        "crops": torch.from_numpy(views.copy()),
        "embeddings": embeddings,
        "text": text,
        "routed": routed,
        "wmr": wmr,
        "merged": merged,
        "logits": logits,
        "rho": rho,
    }


if __name__ == "__main__":
    import mote.pipeline  # noqa: F401  (the torchvision shim before open_clip)

    torch.set_num_threads(1)
    save_file({k: v.contiguous() for k, v in compute().items()}, str(GOLDENS))
    print(f"wrote {GOLDENS}")
