"""``mote info``: what a feature store holds and which videos failed; ``--verify`` checks it.

``--verify`` reads every chunk (checksums, missing files, finite non-zero done rows, labels, ids);
``--sample N --root DIR`` also re-encodes N random done videos with the store's recorded model,
weights and sampling, through extraction's own decode path, and compares them with the stored
embeddings, which catches data that are well-formed but wrong.
"""

from __future__ import annotations

import numpy as np

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.verify import Problem, VerifyReport, verify
from mote.pipeline.config import default_encoder_batch
from mote.pipeline.data.folders import check_root
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import locate
from mote.stages.configs.info_config import SAMPLE_TOLERANCE, InfoConfig  # noqa: F401


def run(cfg: InfoConfig) -> dict:
    """The store's summary (the keys of ``mote info --json``), plus ``verify`` when asked."""
    if cfg.sample and cfg.root is None:
        raise ConfigError(
            "--sample re-encodes videos, so it needs --root: the folder the store's video ids "
            "are relative to"
        )
    if cfg.root is not None:
        check_root("list", cfg.root, storage_options=cfg.storage_options)
    store = FeatureStore.open(cfg.store, storage_options=cfg.storage_options)
    summary = store.summary()
    if cfg.verify or cfg.sample:
        report = verify(store)
        sampled = _sample(store, cfg, report) if cfg.sample else []
        summary["verify"] = report.to_dict() | {
            "sampled": sampled,
            "tolerance": cfg.tolerance,
        }
    return summary


def _sample(store: FeatureStore, cfg: InfoConfig, report: VerifyReport) -> list[int]:
    """Re-encode random done videos whose chunks verified clean; add a problem per mismatch."""
    from mote.pipeline.clip.build import build_clip
    from mote.pipeline.clip.encoding import BatchedEncoder
    from mote.pipeline.threads import command_threads
    from mote.pipeline.video.decode_pool import decode_one, store_tasks

    damaged = set(v for p in report.problems for v in p.videos)
    candidates = np.asarray([i for i in np.flatnonzero(store.done_mask()) if i not in damaged])
    if candidates.size == 0:
        return []
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(candidates, size=min(cfg.sample, candidates.size), replace=False))
    spec = store.spec
    clip = build_clip(spec.model, spec.pretrained, cfg.device, spec.sampling_seed)
    if clip.weights_id != spec.weights_id:
        raise ConfigError(
            f"{cfg.store}: its weights are {spec.weights_id} but {spec.model} with "
            f"{spec.pretrained} loads {clip.weights_id} here, so the sample cannot be re-encoded; "
            "verify on the machine that extracted the store"
        )
    tasks = store_tasks(
        spec, store.video_ids, rows, locate(cfg.root), cfg.decoder, cfg.storage_options
    )
    encoder = BatchedEncoder(clip, default_encoder_batch(clip.device))
    stored_idx = dict(zip(rows.tolist(), store.read_frame_indices(rows), strict=True))
    fresh: dict[int, np.ndarray] = {}
    with command_threads(clip.device, width=clip.dim):  # decoded in this process: no workers
        for task in tasks:
            video = decode_one(task)
            if not video.ok:
                reason = f"cannot be re-decoded ({video.failure()})"
                _add(report, store, task.index, "embeddings", reason)
                continue
            if not np.array_equal(video.frame_indices, stored_idx[task.index]):
                _add(report, store, task.index, "frame_indices", "differs from a fresh sampling")
            fresh.update(encoder.add(task.index, video.views))
        fresh.update(encoder.flush())
    for row, new in sorted(fresh.items()):
        old = store.read_embeddings([row])[0].astype(np.float32)
        diff = float(np.abs(new.astype(np.float32) - old).max())
        scale = max(float(np.abs(old).max()), 1e-6)
        if diff > cfg.tolerance * scale:
            _add(
                report,
                store,
                row,
                "embeddings",
                f"differs from a fresh encoding of {store.video_ids[row]!r}: max abs diff "
                f"{diff:.3g} is {diff / scale:.1%} of its largest value (tolerance "
                f"{cfg.tolerance:.0%})",
            )
    return rows.tolist()


def _add(report: VerifyReport, store: FeatureStore, row: int, array: str, reason: str) -> None:
    chunk = store.chunk_of(int(row))
    report.problems.append(Problem(str(store.path), array, chunk, (int(row),), reason, False))
