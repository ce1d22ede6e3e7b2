"""A run's ``config.json`` as one typed record: what every command that writes a run records, and
what the readers (evaluate, predict, report, run_clip, warm starts, resume) ask of it.

Only ``run_folder.py`` turns it into JSON and back. The file keeps its flat layout (``arch``,
``model_config``, ``clip``, ``classes``, ``train``...; the command's other facts such as device,
precision or warnings beside them, as ``details``), so runs written before this record existed
read unchanged: a key an older run lacks reads as the field's default, and ``model_config``
keys an older mote did not know take ``MoTEConfig``'s defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.arch_names import DEFAULT_ARCH
from mote.pipeline.temporal.temporal_config import MoTEConfig

# 1: the first typed record (the layout the commands wrote by hand before, plus this number).
RUN_CONFIG_VERSION = 1
VERSION_KEY = "config_version"


@dataclass(frozen=True)
class RunClip:
    """The CLIP a run was built on (its features, or the tower it tuned)."""

    model: str | None = None
    pretrained: str | None = None
    weights_id: str | None = None  # "random:seed=N", a file hash...: what a store must match
    dim: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run records about how it was made.

    ``source`` names the command ("train-temporal", "finetune-e2e", "import-reference");
    ``train`` the command's settings as given (paths resolved), compared on ``--resume``;
    ``details`` every other fact the command reports (device, precision, warnings, counts).
    """

    source: str
    model: MoTEConfig | None = None
    clip: RunClip = field(default_factory=RunClip)
    classes: tuple[str, ...] | None = None  # the class names the run's text bank holds
    train: Mapping[str, Any] = field(default_factory=dict)
    train_sampling: Mapping[str, Any] = field(default_factory=dict)
    params_merged: int | None = None
    params_train: int | None = None
    tool_version: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    version: int = RUN_CONFIG_VERSION

    @property
    def arch(self) -> str:
        return self.model.arch if self.model is not None else DEFAULT_ARCH

    @property
    def train_frames(self) -> int | None:
        """Frames per clip the run was trained on, when it recorded them."""
        frames = self.train_sampling.get("frames")
        return int(frames) if frames is not None else None

    def to_json(self) -> dict[str, Any]:
        """The flat ``config.json`` object (typed fields first, then the details)."""
        out: dict[str, Any] = {
            VERSION_KEY: self.version,
            "source": self.source,
            "tool_version": self.tool_version,
            "arch": self.arch,
            "model_config": None if self.model is None else dataclasses.asdict(self.model),
            "clip": {k: v for k, v in dataclasses.asdict(self.clip).items() if v is not None},
            "classes": None if self.classes is None else list(self.classes),
            "train": dict(self.train),
            "train_sampling": dict(self.train_sampling),
            "params_merged": self.params_merged,
            "params_train": self.params_train,
        }
        clash = sorted(set(out) & set(self.details))
        if clash:
            raise ConfigError(f"run details {clash} would overwrite recorded fields")
        return {**out, **self.details}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> RunConfig:
        """Read a ``config.json`` object (``where`` names the file in errors)."""
        version = data.get(VERSION_KEY, RUN_CONFIG_VERSION)
        if not isinstance(version, int) or version > RUN_CONFIG_VERSION:
            raise ConfigError(
                f"{where}: config version {version!r} is newer than this mote reads "
                f"({RUN_CONFIG_VERSION}); upgrade mote to read this run"
            )
        model = data.get("model_config")
        clip = data.get("clip") or {}
        known = {f.name for f in dataclasses.fields(RunClip)}
        typed = {VERSION_KEY, "source", "tool_version", "arch", "model_config", "clip"}
        typed |= {"classes", "train", "train_sampling", "params_merged", "params_train"}
        try:
            return cls(
                source=str(data.get("source") or "train-temporal"),
                model=MoTEConfig.from_dict(model) if isinstance(model, Mapping) else None,
                clip=RunClip(**{k: v for k, v in clip.items() if k in known}),
                classes=tuple(data["classes"]) if data.get("classes") is not None else None,
                train=dict(data.get("train") or {}),
                train_sampling=dict(data.get("train_sampling") or {}),
                params_merged=data.get("params_merged"),
                params_train=data.get("params_train"),
                tool_version=data.get("tool_version"),
                details={k: v for k, v in data.items() if k not in typed},
                version=version,
            )
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"{where}: not a mote run config ({error})") from error
