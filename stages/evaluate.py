"""``mote evaluate``: close-set top-1/top-5 of a trained run on a feature store.

Every view the store holds is scored (e.g. 1x1 or 4x3) and fused as the reference does
(spec 8.1); TFM is on by default, as in the reference's close-set evaluation, where it leaves
the scores almost unchanged (rho is about 1 when the test classes are the training classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mote.cache_schema.store import FeatureStore
from mote.pipeline.clip_model import resolve_device
from mote.pipeline.evaluation import save_predictions, score
from mote.pipeline.run_clip import run_weights_id
from mote.pipeline.run_folder import Run, load_run


@dataclass(frozen=True)
class EvaluateConfig:
    run: Path
    store: Path
    tfm: bool = True
    best: bool = False
    device: str = "auto"
    save_predictions: Path | None = None


def store_expectation(run: Run) -> dict:
    """What a store must match to be scored by this run: the CLIP that made the features.

    Runs that carry tuned CLIP weights need stores made with ``mote extract --run RUN``.
    """
    clip = run.config.get("clip", {})
    expect = {key: clip[key] for key in ("model", "weights_id", "dim") if clip.get(key)}
    expect.setdefault("dim", run.model.cfg.dim)
    tuned = run_weights_id(run.path)
    if tuned is not None:
        expect["weights_id"] = tuned
    return expect


def run(cfg: EvaluateConfig) -> dict:
    device = resolve_device(cfg.device)
    loaded = load_run(cfg.run, device, best=cfg.best)
    store = FeatureStore.open(cfg.store, expect=store_expectation(loaded))
    indices, embeddings, labels = store.read_done()
    ids = [store.video_ids[i] for i in indices]
    text = torch.from_numpy(np.array(store.text_embeddings))
    scores = score(loaded.model, embeddings, labels, ids, text, cfg.tfm, device)
    result = scores.metrics()
    result.update(
        views=store.spec.layout,
        tfm=cfg.tfm,
        run=str(cfg.run),
        store=str(cfg.store),
        weights="best" if cfg.best else "last",
        n_failed_skipped=int(store.n_videos - len(indices)),
        rho_mean=float(scores.rho.mean()) if len(scores.rho) else None,
        same_classes_as_training=list(store.class_names) == loaded.config.get("classes"),
    )
    if cfg.save_predictions is not None:
        save_predictions(cfg.save_predictions, scores, list(store.class_names))
        result["predictions"] = str(cfg.save_predictions)
    return result
