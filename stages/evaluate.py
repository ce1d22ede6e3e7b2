"""``mote evaluate``: close-set top-1/top-5 of a trained run on a feature store.

Every view the store holds is scored (e.g. 1x1 or 4x3) and fused as the reference does
(spec 8.1); TFM is on by default, as in the reference's close-set evaluation, where it leaves
the scores almost unchanged (rho is about 1 when the test classes are the training classes).
"""

from __future__ import annotations

import numpy as np
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_clip import store_expectation
from mote.pipeline.runs.run_files import check_predictions_path, save_predictions
from mote.pipeline.runs.run_folder import load_run
from mote.pipeline.temporal.evaluation import override_tfm, score
from mote.pipeline.temporal.metrics import per_class_top1
from mote.pipeline.threads import command_threads, use_threads
from mote.stages.configs.evaluate_config import EvaluateConfig  # noqa: F401


@command_threads()
def run(cfg: EvaluateConfig) -> dict:
    device = resolve_device(cfg.device)
    check_predictions_path(cfg.save_predictions)
    loaded = load_run(cfg.run, device, best=cfg.best)
    use_threads(device, width=loaded.model.cfg.dim)
    override_tfm(loaded.model, cfg.tfm_gamma, cfg.tfm_k)
    store = FeatureStore.open(
        cfg.store, expect=store_expectation(loaded), storage_options=cfg.storage_options
    )
    store.require_labels("evaluate")
    indices, embeddings, labels = store.read_done()
    if len(indices) == 0:
        raise ConfigError(f"{cfg.store}: no video is done in this store; run `mote extract` first")
    ids = [store.video_ids[i] for i in indices]
    text = torch.from_numpy(np.array(store.text_embeddings))
    scores = score(loaded.model, embeddings, labels, ids, text, cfg.tfm, device)
    result = scores.metrics()
    result.update(
        views=store.spec.layout,
        tfm=cfg.tfm,
        run=str(cfg.run),
        store=str(cfg.store),
        weights=loaded.weights_file,
        n_failed_skipped=int(store.n_videos - len(indices)),
        rho_mean=float(scores.rho.mean()) if len(scores.rho) else None,
        same_classes_as_training=list(store.class_names) == list(loaded.config.classes or ()),
    )
    class_names = list(store.class_names)
    confusion = scores.confusion() if cfg.per_class else None
    if confusion is not None:
        result["per_class"] = per_class_top1(confusion, class_names)
        result["confusion"] = {"class_names": class_names, "counts": confusion.tolist()}
    if cfg.save_predictions is not None:
        save_predictions(cfg.save_predictions, scores, class_names, confusion)
        result["predictions"] = str(cfg.save_predictions)
    return result
