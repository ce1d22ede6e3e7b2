"""Model names to open_clip architectures: registry look-up, mote-tiny, JSON configs, local-dir.

open_clip reads architectures only from JSON files, so a config mote makes up (``mote-tiny``, a
user's ``.json``) is written to a temporary folder and registered with ``add_model_config``. Models
are built here on the CPU in fp32 from a seed; weights are filled in by ``weights.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from mote.pipeline.errors import ConfigError

TINY_NAME = "mote-tiny"
# A test-size CLIP (contract "Common options"): 64-d embeddings, 2 layers per tower, 64 px input.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
LOCAL_DIR_PREFIX = "local-dir:"
_config_dir: Path | None = None


@dataclass(frozen=True)
class Architecture:
    """An architecture open_clip can build, plus what the weights source adds to it."""

    name: str  # name in open_clip's registry, or a local-dir: spec
    cfg: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)
    quick_gelu: bool = False

    @property
    def local_dir(self) -> Path | None:
        """The folder of a ``local-dir:`` architecture, else None."""
        if not self.name.startswith(LOCAL_DIR_PREFIX):
            return None
        return Path(self.name[len(LOCAL_DIR_PREFIX) :])

    def adapted(self, *, quick_gelu: bool, preprocess: dict[str, Any]) -> Architecture:
        """The same architecture as the weights need it (OpenAI weights: QuickGELU)."""
        return dataclasses.replace(
            self, quick_gelu=self.quick_gelu or quick_gelu, preprocess=preprocess or self.preprocess
        )


def register_tiny() -> str:
    """Register ``mote-tiny`` with open_clip once per process; return its name."""
    return _register(TINY_NAME, TINY_CONFIG)


def resolve_model(model: str) -> Architecture:
    """Map the --model value to an open_clip architecture and its config."""
    if model == TINY_NAME:
        return Architecture(register_tiny(), _model_config(TINY_NAME))
    if model.startswith(LOCAL_DIR_PREFIX):
        return _resolve_local_dir(model)
    if model.lower().endswith(".json") or os.path.isfile(model):
        return _resolve_config_file(model)
    if model.startswith("hf-hub:"):
        raise ConfigError(
            f"--model {model}: hub models are not fetched by mote; download the repo and use "
            "--model local-dir:/path/to/that/folder"
        )
    arch = model.replace("/", "-")  # open_clip accepts "ViT-B/16" for "ViT-B-16"
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise ConfigError(
            f"--model {model!r} is not an open_clip model, a .json config file or "
            f"local-dir:PATH; {hint} (or use the built-in {TINY_NAME!r})"
        )
    return Architecture(arch, cfg)


def create(arch: Architecture, seed: int) -> torch.nn.Module:
    """Build the architecture on CPU in fp32 with weights drawn from ``seed`` (isolated RNG)."""
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        if arch.local_dir is not None:
            return open_clip.create_model(arch.name, device="cpu", load_weights=False)
        return open_clip.create_model(
            arch.name,
            pretrained=None,
            precision="fp32",
            device="cpu",
            force_quick_gelu=arch.quick_gelu,
            force_preprocess_cfg=arch.preprocess or None,
            pretrained_image=False,
            pretrained_text=False,
        )


def _resolve_local_dir(model: str) -> Architecture:
    folder = Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser()
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise ConfigError(
            f"--model {model}: {config} not found; a local-dir folder needs open_clip_config.json "
            "(as written by open_clip's push_to_hf_hub) next to its weights"
        )
    name = f"{LOCAL_DIR_PREFIX}{folder}"
    return Architecture(name, _model_config(name))


def _resolve_config_file(model: str) -> Architecture:
    """A JSON architecture (open_clip's model_configs format, or open_clip_config.json's)."""
    path = Path(model).expanduser()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"--model {model}: config file not found") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model {model}: cannot read JSON config ({exc})") from exc
    cfg = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= cfg.keys():
        raise ConfigError(
            f"--model {model}: not an open_clip model config (needs embed_dim, vision_cfg, "
            "text_cfg, like open_clip/model_configs/ViT-B-16.json)"
        )
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    arch = _register(f"mote-file-{path.stem}-{digest}", cfg)
    return Architecture(arch, _model_config(arch), dict(raw.get("preprocess_cfg", {})))


def _model_config(arch: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(arch)
    if cfg is None:  # registered a moment ago, so this is a bug, not a user error
        raise RuntimeError(f"open_clip has no config for {arch!r} after registration")
    return cfg


def _register(name: str, cfg: dict[str, Any]) -> str:
    """Register ``cfg`` as ``name`` (open_clip reads configs only from JSON files); idempotent."""
    global _config_dir
    if name in open_clip.list_models():
        return name
    if _config_dir is None:
        _config_dir = Path(tempfile.mkdtemp(prefix="mote-open-clip-configs-"))
        atexit.register(shutil.rmtree, _config_dir, True)
    _config_dir.mkdir(parents=True, exist_ok=True)  # a forked child may outlive its parent's
    path = _config_dir / f"{name}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(path)
    return name


class _DropOpenClipNotices(logging.Filter):
    """Drop open_clip's INFO/WARNING chatter such as 'Model initialized randomly'."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or "open_clip" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Mute open_clip's root-logger notices while mote builds a model it fills in itself.

    A temporary NullHandler stops ``logging.warning`` from installing a root handler as a side
    effect (it calls ``basicConfig`` when the root logger has none).
    """
    root = logging.getLogger()
    notice_filter, null = _DropOpenClipNotices(), logging.NullHandler()
    root.addFilter(notice_filter)
    root.addHandler(null)
    try:
        yield
    finally:
        root.removeHandler(null)
        root.removeFilter(notice_filter)
