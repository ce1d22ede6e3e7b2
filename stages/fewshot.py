"""``mote fewshot``: the paper's all-way K-shot protocol (spec 8.3) on cached features.

For each K and seed: draw K done videos per class from the training store, train the temporal
module from scratch on them (the paper starts from CLIP, not from the K400 model), the set
repeated to the size of the full training set per epoch, then score the test store with a
single view. Report top-1 mean +- std over seeds for every K.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, TrainingDiverged
from mote.pipeline.progress import NullProgress, Progress, Quiet
from mote.pipeline.runs.run_folder import RunFolder, load_run
from mote.pipeline.temporal.evaluation import score
from mote.pipeline.temporal.metrics import mean_std
from mote.pipeline.threads import command_threads, use_threads
from mote.stages import train_temporal
from mote.stages.configs.fewshot_config import FewShotConfig  # noqa: F401


def sample_shots(labels: np.ndarray, done: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Store rows of ``shots`` done videos per class, drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(labels):
        pool = np.flatnonzero((labels == label) & done)
        if len(pool) < shots:
            raise ConfigError(
                f"class {label} has only {len(pool)} done videos, fewer than {shots} shots"
            )
        rows.append(rng.choice(pool, size=shots, replace=False))
    return np.sort(np.concatenate(rows))


def train_shots(cfg: train_temporal.TrainConfig, progress: Progress) -> None:
    """One K-shot run; a diverged one stops the protocol (exit 5) with fewshot's way out: the
    run is unfinished, so the same command trains it again."""
    try:
        train_temporal.run(cfg, Quiet(progress))
    except TrainingDiverged as error:
        now = f" (now {cfg.lr:g})" if cfg.lr is not None else ""
        raise TrainingDiverged(
            f"{cfg.out}: {error.what}; lower --lr{now} or pass --precision fp32, then rerun the "
            "same command: it keeps the finished runs and trains this one again"
        ) from error


@command_threads()
def run(cfg: FewShotConfig, progress: Progress | None = None) -> dict:
    progress = progress or NullProgress()
    train = FeatureStore.open(cfg.train, storage_options=cfg.storage_options)
    test = FeatureStore.open(
        cfg.test,
        expect={
            "model": train.spec.model,
            "weights_id": train.spec.weights_id,
            "dim": train.spec.dim,
        },
        storage_options=cfg.storage_options,
    )
    for store in (train, test):
        store.require_labels("fewshot")
    if tuple(test.class_names) != tuple(train.class_names):
        raise ConfigError(
            f"{cfg.test}: its classes differ from {cfg.train}; the K-shot "
            "protocol trains and tests on the same classes"
        )
    labels = np.asarray(train.labels)
    done = train.done_mask()
    full = int(done.sum())
    if not cfg.shots or not cfg.seeds:
        raise ConfigError("--shots and --seeds need at least one value each")
    fewest = min(int(((labels == c) & done).sum()) for c in np.unique(labels))
    if max(cfg.shots) > fewest:
        raise ConfigError(
            f"{cfg.train}: a class has only {fewest} done videos, fewer than "
            f"{max(cfg.shots)} shots; lower --shots"
        )
    device = resolve_device(cfg.device)
    use_threads(device, width=train.spec.dim)  # each train-temporal run applies it again
    indices, embeddings, test_labels = test.read_done()
    view = train_temporal.centre_view(test.spec.crops)
    single_view = embeddings[:, view : view + 1]  # spec 8.3: one view, the first clip's centre
    ids = [test.video_ids[i] for i in indices]
    text = torch.from_numpy(np.array(test.text_embeddings))
    base = cfg.training or train_temporal.TrainConfig(train=cfg.train, out=cfg.out)
    # One fewshot call per folder: it deletes unfinished runs there before redoing them.
    with RunFolder(cfg.out).writer_claim(True, progress):
        results: dict[str, dict] = {}
        for shots in cfg.shots:
            top1s = []
            for seed in cfg.seeds:
                rows = sample_shots(labels, done, shots, seed)
                out = cfg.out / f"k{shots}_seed{seed}"
                if not RunFolder(out).is_finished():  # finished runs of an earlier call are kept
                    if out.exists():
                        shutil.rmtree(out)  # an unfinished run: start it again
                    train_cfg = replace(
                        base,
                        train=cfg.train,
                        val=None,
                        out=out,
                        epochs=cfg.epochs,
                        seed=seed,
                        device=cfg.device,
                        storage_options=cfg.storage_options,
                        videos=tuple(int(r) for r in rows),
                        epoch_size=full,
                        resume=False,
                    )
                    train_shots(train_cfg, progress)
                model = load_run(out, device).model
                scores = score(model, single_view, test_labels, ids, text, tfm=False, device=device)
                top1s.append(scores.metrics()["top1"])
            mean, std = mean_std(top1s)
            results[str(shots)] = {
                "top1_mean": mean,
                "top1_std": std,
                "top1": top1s,
                "seeds": list(cfg.seeds),
            }
        summary = {
            "shots": results,
            "train": str(cfg.train),
            "test": str(cfg.test),
            "epochs": cfg.epochs,
            "views": "1 (first stored view)",
            "n_test_videos": len(indices),
            "epoch_size": full,
        }
        RunFolder(cfg.out).write_fewshot(summary)
    return summary
