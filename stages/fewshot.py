"""``mote fewshot``: the paper's all-way K-shot protocol (spec 8.3) on cached features.

For each K and seed: draw K done videos per class from the training store, train the temporal
module from scratch on them (the paper starts from CLIP, not from the K400 model), the set
repeated to the size of the full training set per epoch, then score the test store with a
single view. Report top-1 mean +- std over seeds for every K.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

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


def open_stores(cfg: FewShotConfig) -> tuple[FeatureStore, FeatureStore]:
    """The training and test stores, checked to share the CLIP, the width and the classes."""
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
    return train, test


def check_shots(cfg: FewShotConfig, labels: np.ndarray, done: np.ndarray) -> None:
    """Refuse before any training when a class cannot give the largest K."""
    if not cfg.shots or not cfg.seeds:
        raise ConfigError("--shots and --seeds need at least one value each")
    fewest = min(int(((labels == c) & done).sum()) for c in np.unique(labels))
    if max(cfg.shots) > fewest:
        raise ConfigError(
            f"{cfg.train}: a class has only {fewest} done videos, fewer than "
            f"{max(cfg.shots)} shots; lower --shots"
        )


@dataclass(frozen=True)
class ScoredView:
    """The test store as the protocol scores it: one view per video (spec 8.3)."""

    embeddings: np.ndarray
    labels: np.ndarray
    ids: list[str]
    text: torch.Tensor

    @classmethod
    def of(cls, test: FeatureStore) -> ScoredView:
        indices, embeddings, labels = test.read_done()
        view = train_temporal.centre_view(test.spec.crops)
        single_view = embeddings[:, view : view + 1]  # the first clip's centre crop
        ids = [test.video_ids[i] for i in indices]
        return cls(single_view, labels, ids, torch.from_numpy(np.array(test.text_embeddings)))

    def inputs(self) -> tuple[np.ndarray, np.ndarray, list[str], torch.Tensor]:
        return self.embeddings, self.labels, self.ids, self.text


def shot_settings(
    cfg: FewShotConfig,
    base: train_temporal.TrainConfig,
    out: Path,
    rows: np.ndarray,
    seed: int,
    epoch_size: int,
) -> train_temporal.TrainConfig:
    """The train-temporal settings of one K-shot run: its rows, seed and folder."""
    return replace(
        base,
        train=cfg.train,
        val=None,
        out=out,
        epochs=cfg.epochs,
        seed=seed,
        device=cfg.device,
        storage_options=cfg.storage_options,
        videos=tuple(int(r) for r in rows),
        epoch_size=epoch_size,
        resume=False,
    )


@command_threads()
def run(cfg: FewShotConfig, progress: Progress | None = None) -> dict:
    progress = progress or NullProgress()
    train, test = open_stores(cfg)
    labels = np.asarray(train.labels)
    done = train.done_mask()
    full = int(done.sum())
    check_shots(cfg, labels, done)
    device = resolve_device(cfg.device)
    use_threads(device, width=train.spec.dim)  # each train-temporal run applies it again
    tested = ScoredView.of(test)
    base = cfg.training or train_temporal.TrainConfig(train=cfg.train, out=cfg.out)
    # One fewshot call per folder: it deletes unfinished runs there before redoing them.
    with RunFolder(cfg.out).writer_claim(True, progress):
        results: dict[str, dict] = {}
        for shots in cfg.shots:
            top1s = []
            for seed in cfg.seeds:
                out = cfg.out / f"k{shots}_seed{seed}"
                if not RunFolder(out).is_finished():  # finished runs of an earlier call are kept
                    if out.exists():
                        shutil.rmtree(out)  # an unfinished run: start it again
                    rows = sample_shots(labels, done, shots, seed)
                    train_shots(shot_settings(cfg, base, out, rows, seed, full), progress)
                model = load_run(out, device).model
                scores = score(model, *tested.inputs(), tfm=False, device=device)
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
            "n_test_videos": len(tested.ids),
            "epoch_size": full,
        }
        RunFolder(cfg.out).write_fewshot(summary)
    return summary
