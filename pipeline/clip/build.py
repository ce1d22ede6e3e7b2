"""``build_clip``: the one entry point that joins an architecture, its weights and a device."""

from __future__ import annotations

from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.factory import create, resolve_model
from mote.pipeline.clip.weights import RANDOM_TAG, find_weights, load_weights
from mote.pipeline.device import resolve_device


def build_clip(model: str, pretrained: str, device: str = "auto", seed: int = 0) -> ClipEncoder:
    """Build ``model`` with ``pretrained`` weights (a tag, a local file or ``none``) on a device.

    With weights, ``seed`` does not matter: every tensor is overwritten by the file's.
    """
    torch_device = resolve_device(device)
    arch = resolve_model(model)
    if pretrained.strip().lower() == RANDOM_TAG:
        net = create(arch, seed)
        source, weights_id = RANDOM_TAG, f"random:seed={seed}"
    else:
        weights = find_weights(model, arch, pretrained)
        arch = arch.adapted(quick_gelu=weights.quick_gelu, preprocess=weights.preprocess)
        net = create(arch, seed)
        load_weights(net, weights.path, model)
        weights_id = weights.weights_id
        source = pretrained if weights_id == pretrained else str(weights.path)
    net.eval().to(torch_device)
    return ClipEncoder(
        net,
        model_name=model,
        pretrained=source,
        weights_id=weights_id,
        dim=int(arch.cfg["embed_dim"]),
        arch=arch.name,
        device=torch_device,
    )
