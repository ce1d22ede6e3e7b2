"""What a store holds (``StoreSpec``) and what extraction gives for one video (``VideoResult``).

``StoreSpec`` is the root attributes of a v1 store as a typed value (``v1.SPEC_ATTRS`` names them);
``plain`` and ``show`` turn attribute values into JSON and into short text for messages;
``fingerprint`` names a list of ids or rows in an attribute (files derived from a store use it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mote.cache_schema import v1


def plain(value: Any) -> Any:
    """The JSON form of ``value`` (tuples become lists, numpy scalars Python numbers)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        raise TypeError(f"cannot store {type(obj).__name__} {obj!r} as a JSON attribute")

    return json.loads(json.dumps(value, default=default))


def show(value: Any, limit: int = 80) -> str:
    """A short printable form of an attribute value for error messages."""
    text = repr(value) if isinstance(value, str) else json.dumps(plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fingerprint(values: Sequence[str] | np.ndarray) -> str:
    """``sha256:<16 hex>`` of a list of ids or an integer array: what a resume compares."""
    digest = hashlib.sha256()
    if isinstance(values, np.ndarray):
        digest.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
    else:
        digest.update("\n".join(values).encode())
    return f"sha256:{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: the model, its weights, the sampling, the dataset split, the classes."""

    model: str
    pretrained: str
    weights_id: str
    dim: int
    frames: int
    clips: int
    crops: int
    sampling: str
    sampling_seed: int
    preprocess: dict
    dataset: str
    split: str
    class_names: tuple[str, ...]
    tool_version: str

    def __post_init__(self) -> None:
        for name in ("dim", "frames", "clips", "crops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"StoreSpec.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "sampling_seed", int(self.sampling_seed))
        if self.sampling not in v1.SAMPLING_RULES:
            raise ValueError(
                f"StoreSpec.sampling must be one of {v1.SAMPLING_RULES}, got {self.sampling!r}"
            )
        missing = [k for k in v1.PREPROCESS_KEYS if k not in self.preprocess]
        if missing:
            raise ValueError(f"StoreSpec.preprocess lacks {missing}; it needs {v1.PREPROCESS_KEYS}")
        object.__setattr__(self, "preprocess", plain(dict(self.preprocess)))
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    @property
    def labelled(self) -> bool:
        """Whether the videos have classes; an unlabelled store names none (``v1.LABELLED``)."""
        return bool(self.class_names)

    @property
    def views(self) -> int:
        """Views per video; view index v = clip * crops + crop."""
        return self.clips * self.crops

    @property
    def layout(self) -> str:
        """The view layout as the CLI spells it: clips x crops, e.g. ``"3x1"``."""
        return f"{self.clips}x{self.crops}"

    def sizes(self, n_videos: int) -> dict[str, int]:
        """The size of each named dimension of a store of ``n_videos`` videos (``v1.shape_of``)."""
        return {
            "video": n_videos,
            "view": self.views,
            "frame": self.frames,
            "dim": self.dim,
            "class": len(self.class_names),
        }

    def to_attrs(self) -> dict[str, Any]:
        """The spec as JSON-ready root attributes (one per field)."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreSpec:
        """Rebuild the spec from a store's root attributes."""
        return cls(**{name: attrs[name] for name in v1.SPEC_ATTRS})


@dataclass
class VideoResult:
    """What extraction produced for one video: its embeddings, or a failure reason."""

    index: int  # row of the video in the store
    embeddings: np.ndarray | None  # float16 (views, frames, dim); None when failed
    frame_indices: np.ndarray | None  # int32 (views, frames); None when failed
    num_frames: int  # frames the decoder reported (0 or -1 when unknown)
    reason: str = ""  # non-empty means the video failed

    @classmethod
    def failure(cls, index: int, reason: str, num_frames: int = -1) -> VideoResult:
        """A failed video: no data, only why."""
        return cls(index, None, None, num_frames, reason)

    @property
    def failed(self) -> bool:
        return bool(self.reason)
