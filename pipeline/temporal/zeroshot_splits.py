"""The zero-shot protocol's bookkeeping: which stored videos and class texts make each split.

Videos are found by id across any number of stores (one store per split, or one store of the
union, ``--split all``); only done videos count, and the ones a split lists but no store holds
are reported as missing. Class text embeddings come from the stores, looked up by class name,
so a K600 union store (217 names) serves each split's own 160 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.datasets import DatasetSpec
from mote.pipeline.errors import ConfigError

# Spec 8.2: 8 frames, 3 clips x 1 crop, the evaluation sampling rule.
PROTOCOL = {"frames": 8, "views": "3x1", "sampling": "eval"}


@dataclass
class SplitData:
    """The features and labels of one split, in its list's order."""

    split: str
    video_ids: list[str]
    embeddings: np.ndarray  # (N, V, T, D) float16
    labels: np.ndarray  # (N,) int64, indices into class_names
    class_names: tuple[str, ...]
    text: torch.Tensor  # (C, D) class text embeddings from a store
    missing: list[str]  # listed videos that no store holds as done


def protocol_problems(store: FeatureStore) -> list[str]:
    """How a store's sampling differs from the zero-shot protocol (empty: it follows it)."""
    spec = store.spec
    found = {"frames": spec.frames, "views": spec.layout, "sampling": spec.sampling}
    return [
        f"{key} is {found[key]!r}, the protocol uses {want!r}"
        for key, want in PROTOCOL.items()
        if found[key] != want
    ]


class StoreIndex:
    """Where each done video lives across several stores."""

    def __init__(self, stores: list[FeatureStore]) -> None:
        if not stores:
            raise ConfigError("give at least one --store")
        layouts = {(s.spec.layout, s.spec.frames, s.spec.dim) for s in stores}
        if len(layouts) > 1:
            raise ConfigError(
                f"the stores differ in views/frames/dim {sorted(layouts)}; "
                "zero-shot splits need one layout"
            )
        self.stores = stores
        self._where: dict[str, tuple[int, int]] = {}
        for s, store in enumerate(stores):
            done = store.done_mask()
            # Labels come from the split list, but a store missing a labels chunk is damaged
            # (an extract --repair rewrites it): fail as every reader does, not score it.
            store.labels  # noqa: B018
            for row, video in enumerate(store.video_ids):
                if done[row]:
                    self._where.setdefault(video, (s, row))

    def select(self, dataset: DatasetSpec) -> SplitData:
        """The split's videos (list order) that some store holds, with their list labels."""
        ids, labels, missing = [], [], []
        by_store: dict[int, list[tuple[int, int]]] = {}
        for item in dataset.items:
            found = self._where.get(item.video_id)
            if found is None:
                missing.append(item.video_id)
                continue
            by_store.setdefault(found[0], []).append((len(ids), found[1]))
            ids.append(item.video_id)
            labels.append(item.label)
        spec = self.stores[0].spec
        embeddings = np.zeros((len(ids), spec.views, spec.frames, spec.dim), np.float16)
        for s, pairs in by_store.items():
            order = sorted(pairs, key=lambda pair: pair[1])
            rows = np.array([row for _, row in order])
            embeddings[[pos for pos, _ in order]] = self.stores[s].read_embeddings(rows)
        return SplitData(
            dataset.split,
            ids,
            embeddings,
            np.asarray(labels, np.int64),
            tuple(dataset.class_names),
            self.text_for(dataset.class_names),
            missing,
        )

    def text_for(self, class_names: tuple[str, ...]) -> torch.Tensor:
        """Text embeddings of these classes, from the first store that has all of them."""
        for store in self.stores:
            rows = {name: i for i, name in enumerate(store.class_names)}
            if all(name in rows for name in class_names):
                bank = np.asarray(store.text_embeddings)
                return torch.from_numpy(bank[[rows[name] for name in class_names]].copy())
        lacking = [n for n in class_names if n not in set(self.stores[0].class_names)][:3]
        raise ConfigError(
            f"no store holds text embeddings for all {len(class_names)} classes of this split "
            f"(e.g. {lacking}); extract the dataset with its own label file, e.g. "
            "`mote extract --dataset <ucf101|hmdb51|k600> --split all`"
        )
