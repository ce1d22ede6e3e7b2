"""The texts a normalised ranking score weighs a query against (the store's class names, else
the shipped vocabulary), and the class bank TFM used when a file was made (``--video``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import locate
from mote.pipeline.search.vocabulary import vocabulary

MIN_CLASSES = 2  # a store's class names make the bank when it has this many; else the vocabulary


def file_store(file: EmbeddingsFile, storage_options: dict[str, Any] | None) -> FeatureStore | None:
    """The store the file was embedded from (local or at a URL); None when its folder is gone."""
    path = locate(file.attrs["store"]["path"])
    if isinstance(path, Path) and not path.exists():
        return None
    return FeatureStore.open(path, storage_options=storage_options)


def test_bank(file: EmbeddingsFile, storage_options: dict[str, Any] | None) -> torch.Tensor | None:
    """The class text bank TFM compared with when the file was made (its store's), or None when
    its variant is plain."""
    variant = file.attrs["variant"]
    if variant.get("name") != "tfm":
        return None
    store = file_store(file, storage_options)
    if store is None:
        raise ConfigError(
            f"--video: {file.path} was made with TFM against the class names of "
            f"{file.attrs['store']['path']}, which is gone; --video needs that store's text "
            "bank (or embeddings made with --no-tfm)"
        )
    return torch.from_numpy(np.array(store.text_embeddings))


@dataclass(frozen=True)
class Bank:
    """The texts a normalised score weighs a query against, and what they are."""

    vectors: torch.Tensor  # float32 (C, D) unit rows, in the space of the text queries
    source: str


def ranking_bank(file: EmbeddingsFile, clip: Any, storage_options: dict[str, Any] | None) -> Bank:
    """The class text bank of the file's store when it names ``MIN_CLASSES`` or more: a store
    matches the run's CLIP (``store_expectation``), so its bank is the run's text tower over
    the same templates as the queries. Else the shipped vocabulary through that text tower."""
    store = file_store(file, storage_options)
    if store is not None and len(store.class_names) >= MIN_CLASSES:
        text = torch.from_numpy(np.array(store.text_embeddings))
        return Bank(text, f"the store's {len(text)} class names")
    names = vocabulary()
    return Bank(vocabulary_vectors(file, clip, names), f"a vocabulary of {len(names)} actions")


def vocabulary_vectors(file: EmbeddingsFile, clip: Any, names: list[str]) -> torch.Tensor:
    """The vocabulary through ``clip``'s text tower: 747 names x 28 templates is minutes of a
    ViT-B/16 text tower on a CPU, so they are kept beside the file, keyed by the CLIP's
    weights and the names."""
    key = f"{clip.model_name}\n{clip.weights_id}\n" + "\n".join(names)
    vectors = kept_beside(
        file, "bank-text", key.encode(), (len(names), None),
        lambda: clip.class_text_embeddings(names).float().numpy(),
    )  # fmt: skip
    return torch.from_numpy(vectors)


def kept_beside(
    file: EmbeddingsFile,
    name: str,
    key: bytes,
    shape: tuple[int | None, ...],
    make: Callable[[], np.ndarray],
) -> np.ndarray:
    """``make()``, kept beside a local embeddings file as ``<name>-<sha256(key)>.npy`` and read
    back while its shape fits ``shape`` (None: any size there): what every search would make
    again. A file at a URL, or a folder that cannot be written, makes it every time."""
    path = None
    if isinstance(file.path, Path):
        path = file.path / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}.npy"
    if path is not None and path.is_file():
        kept = np.load(path)
        fits = kept.ndim == len(shape)
        if fits and all(w in (None, h) for h, w in zip(kept.shape, shape, strict=True)):
            return kept
    made = make()
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only folder: made again next time
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            with partial.open("wb") as handle:
                np.save(handle, made)
            os.replace(partial, path)
    return made
