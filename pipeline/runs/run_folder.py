"""The run folder (``RUN/``) that training writes and evaluation reads.

| file | content |
|---|---|
| ``model.safetensors`` | MoTE state dict, incl. ``logit_scale`` and ``finetune_text`` (the |
|   | frozen text bank TFM needs); + ``clip.*`` CLIP weights for runs that tuned CLIP |
| ``model_best.safetensors`` | the same, from the epoch with the best validation top-1 |
| ``config.json`` | every setting, resolved defaults, the stores read, parameter counts |
| ``history.jsonl`` | one JSON line per epoch |
| ``metrics.json`` | final metrics (contract key names) |
| ``curves.png`` | loss and accuracy curves |
| ``checkpoint.safetensors`` | optimiser and random state for ``--resume`` |

Everything loads with safetensors: loading a run never executes code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.mote_model import MoTE, MoTEConfig

RUN_FORMAT = "mote.run"
RUN_VERSION = "1"
MODEL_FILE = "model.safetensors"
BEST_FILE = "model_best.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
CHECKPOINT_FILE = "checkpoint.safetensors"
CLIP_PREFIX = "clip."  # CLIP weights inside model files (end-to-end and imported runs)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader (or a crash) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors file written atomically; tensors are copied to contiguous CPU memory."""
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(plain, str(tmp), metadata={"format": RUN_FORMAT, "version": RUN_VERSION, **metadata})
    os.replace(tmp, path)


def config_to_json(cfg: MoTEConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def config_from_json(text: str | dict) -> MoTEConfig:
    """Rebuild a MoTEConfig, turning JSON lists back into the tuples the dataclass holds."""
    data = json.loads(text) if isinstance(text, str) else dict(text)
    hints = typing.get_type_hints(MoTEConfig)
    names = {f.name for f in dataclasses.fields(MoTEConfig)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"model config has unknown keys {sorted(unknown)}; a newer mote wrote it?"
        )
    for name, value in data.items():
        if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
            data[name] = tuple(value)
    return MoTEConfig(**data)


def save_model(path: Path, model: MoTE, extra: dict[str, torch.Tensor] | None = None) -> None:
    """The model's state dict (+ extra tensors such as CLIP weights) with its config."""
    tensors = dict(model.state_dict())
    tensors.update(extra or {})
    save_tensors(path, tensors, {"model_config": config_to_json(model.cfg)})


def load_model_file(path: Path, device: str | torch.device = "cpu") -> tuple[MoTE, dict]:
    """A MoTE from a model file, and the file's other tensors (e.g. ``clip.visual.*``)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no model file here")
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != RUN_FORMAT or "model_config" not in metadata:
            raise ConfigError(
                f"{path}: not a mote model file (format {metadata.get('format')!r}); for a "
                "checkpoint of the reference implementation use `mote import-reference`"
            )
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    model = MoTE(config_from_json(metadata["model_config"]))
    own = set(model.state_dict())
    model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=True)
    rest = {k: v for k, v in tensors.items() if k not in own}
    return model.to(device), rest


@dataclass
class Run:
    """A loaded run folder: its model, its config.json, and any extra tensors."""

    path: Path
    config: dict
    model: MoTE
    extra: dict[str, torch.Tensor]
    weights_file: str = MODEL_FILE  # which model file was loaded

    @property
    def clip_state(self) -> dict[str, torch.Tensor]:
        """CLIP weights saved with the run (empty for runs trained on cached features)."""
        n = len(CLIP_PREFIX)
        return {k[n:]: v for k, v in self.extra.items() if k.startswith(CLIP_PREFIX)}


def load_run(path: Path, device: str | torch.device = "cpu", best: bool = False) -> Run:
    """Open ``RUN/`` for evaluation; ``best`` picks the best-validation weights if saved."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{path}: not a run folder (no {CONFIG_FILE}); train one with `mote train-temporal` "
            "or convert a released checkpoint with `mote import-reference`"
        )
    file = path / (BEST_FILE if best and (path / BEST_FILE).is_file() else MODEL_FILE)
    if best and file.name != BEST_FILE:
        raise ConfigError(f"{path}: no {BEST_FILE} (the run had no --val store); drop --best")
    model, extra = load_model_file(file, device)
    model.eval()
    return Run(path, read_json(path / CONFIG_FILE), model, extra, file.name)
