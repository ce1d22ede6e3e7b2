"""Which weights ``--pretrained`` names, what they are called in a store, and loading them.

``weights_id`` is what a feature store records to tell checkpoints apart: a tag as given
(``openai``), ``sha256:<first 16 hex digits>`` of a local file, or ``random:seed=N``. It must stay
the same for the same weights, or existing stores stop matching.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from mote.pipeline.clip import download
from mote.pipeline.clip.factory import Architecture
from mote.pipeline.clip.weights_id import file_weights_id
from mote.pipeline.errors import ConfigError, WeightsUnavailable, torch_load_reason
from mote.pipeline.safe_load import pickle_refusal, refused_pickle

RANDOM_TAG = "none"
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


@dataclass(frozen=True)
class Weights:
    """A weights file on disk, its identity, and what it asks of the architecture."""

    path: Path
    weights_id: str
    quick_gelu: bool = False  # OpenAI's weights were trained with QuickGELU
    preprocess: dict[str, Any] = field(default_factory=dict)  # a tag's mean/std etc.


def find_weights(model: str, arch: Architecture, pretrained: str) -> Weights:
    """Resolve --pretrained to a local file: the folder's weights for local-dir (a tag is then
    ignored), else a tag first (as open_clip does), then a file path. May download."""
    if arch.local_dir is not None:
        path = _local_dir_weights(model, arch.local_dir)
        return Weights(path, file_weights_id(path), quick_gelu=is_torchscript(path))
    tag_cfg = _tag_config(arch.name, pretrained)
    if tag_cfg:
        path = download.cached_file(tag_cfg) or download.download(model, pretrained, tag_cfg)
        preprocess = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or is_torchscript(path)
        return Weights(path, pretrained, quick_gelu, preprocess)
    as_path = Path(pretrained).expanduser()
    if as_path.is_file():
        return Weights(as_path, file_weights_id(as_path), quick_gelu=is_torchscript(as_path))
    raise WeightsUnavailable(_unknown_weights_message(model, arch.name, pretrained))


def load_weights(net: torch.nn.Module, path: Path, model: str) -> None:
    """Copy every tensor of ``path`` into ``net`` through open_clip's ``load_checkpoint``
    (safetensors, torch state_dicts, ``module.`` prefixes); any missing, extra or misshapen key
    fails. OpenAI's TorchScript archives, which open_clip reads only without weights_only, are
    read with ``torch.jit.load`` instead."""
    if is_torchscript(path):
        _load_torchscript(net, path, model)
        return
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: the refusal says it all
            warnings.simplefilter("ignore", UserWarning)
            open_clip.load_checkpoint(net, str(path), strict=True, weights_only=True)
    except RuntimeError as exc:
        if "loading state_dict" in str(exc):
            raise _does_not_fit(path, model, exc) from exc
        raise _unreadable(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same to the user
        raise _unreadable(path, exc) from exc


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (OpenAI's original CLIP .pt files)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_torchscript(net: torch.nn.Module, path: Path, model: str) -> None:
    try:
        with warnings.catch_warnings():  # torch>=2.10 deprecates TorchScript; we only read it
            warnings.simplefilter("ignore", DeprecationWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same to the user
        raise _unreadable(path, exc) from exc
    expected = net.state_dict().keys()
    buffers = {name for name, _ in net.named_buffers()}  # TorchScript saves non-persistent ones
    state = {
        k: v
        for k, v in state.items()
        if k not in _JIT_EXTRA_KEYS and (k in expected or k not in buffers)
    }
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != net.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(net.logit_scale.shape)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _does_not_fit(path, model, exc) from exc


def _does_not_fit(path: Path, model: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"weights file {path} does not fit model {model}: {_one_line(exc)[:400]}; pass the "
        "--model the weights were trained with (OpenAI weights need a -quickgelu name)"
    )


def _unreadable(path: Path, exc: Exception) -> WeightsUnavailable:
    needed = refused_pickle(path, exc)
    if needed:
        return WeightsUnavailable(pickle_refusal(path, "the weights file", needed))
    return WeightsUnavailable(
        f"cannot read weights file {path} ({torch_load_reason(exc)}): it is damaged or not a "
        "weights file; download or save it again"
    )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _tag_config(arch: str, tag: str) -> dict[str, Any]:
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg and arch.endswith("-quickgelu"):
        cfg = open_clip.get_pretrained_cfg(arch.removesuffix("-quickgelu"), tag)
    return dict(cfg)


def _unknown_weights_message(model: str, arch: str, pretrained: str) -> str:
    looks_like_path = any(sep in pretrained for sep in "/\\") or Path(pretrained).suffix in {
        ".safetensors",
        ".pt",
        ".pth",
        ".bin",
    }
    if looks_like_path:
        return f"--pretrained {pretrained}: file not found (model {model}); {download.HOW_TO_FIX}"
    tags = open_clip.list_pretrained_tags_by_model(arch)
    known = f"known tags for {arch}: {', '.join(tags)}" if tags else f"{arch} has no known tags"
    return (
        f"--pretrained {pretrained!r} is neither a pretrained tag of {model} nor a file "
        f"({known}); {download.HOW_TO_FIX}, or use `--pretrained none` for random weights"
    )


def _local_dir_weights(model: str, folder: Path) -> Path:
    """The weights file open_clip will load from a local-dir folder."""
    finder = getattr(open_clip.factory, "_find_checkpoint_in_dir", None)
    found = finder(folder) if finder is not None else None
    if found is None:
        raise WeightsUnavailable(
            f"--model {model}: no weights file (*.safetensors, *.bin, *.pth) in {folder}; "
            "put open_clip_model.safetensors there or use `--pretrained none` for random weights"
        )
    return Path(found)
