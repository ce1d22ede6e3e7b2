"""``mote zeroshot``: the paper's zero-shot protocol (spec 8.2) on cached features.

Each split is scored against its full class set with the run's model, TFM on (K400 text bank as
the fine-tuning proxies) unless ``--no-tfm``, views fused as in close-set evaluation. Results
go to the run folder, one file per dataset; once the run holds results for several of UCF101,
HMDB51 and K600, their harmonic mean (``zs_hm``) and the trade-off with the run's close-set
top-1 are computed too (the run's zero-shot summary; see ``RunFolder``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.datasets import ZERO_SHOT_SPLITS, DatasetSpec, load_dataset
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_clip import store_expectation
from mote.pipeline.runs.run_files import (
    check_predictions_path,
    save_predictions,
    split_predictions_path,
)
from mote.pipeline.runs.run_folder import Run, RunFolder, load_run
from mote.pipeline.temporal.evaluation import override_tfm, score
from mote.pipeline.temporal.metrics import harmonic_mean, mean_std, tradeoff
from mote.pipeline.temporal.zeroshot_splits import StoreIndex, protocol_problems
from mote.pipeline.threads import command_threads, use_threads
from mote.stages.configs.zeroshot_config import ZeroShotConfig  # noqa: F401


def _splits(cfg: ZeroShotConfig):
    """(name, DatasetSpec) for every split the command evaluates."""
    if cfg.dataset == "list":
        if not cfg.splits:
            raise ConfigError("--dataset list needs one --split LIST:LABELS per split")
        out = []
        for entry in cfg.splits:
            list_file, sep, labels_file = entry.partition(":")
            if not sep or not list_file or not labels_file:
                raise ConfigError(f"--split {entry!r}: expected LIST:LABELS (two file paths)")
            spec = load_dataset("list", Path(list_file).stem, list_file, labels_file)
            out.append((Path(list_file).stem, spec))
        return out
    if cfg.dataset not in ZERO_SHOT_SPLITS:
        raise ConfigError(
            f"--dataset {cfg.dataset!r}: zero-shot protocols exist for "
            f"{', '.join(ZERO_SHOT_SPLITS)} and list"
        )
    names = cfg.splits or ZERO_SHOT_SPLITS[cfg.dataset]
    return [(name, load_dataset(cfg.dataset, name)) for name in names]


def _open_stores(cfg: ZeroShotConfig, loaded) -> list[FeatureStore]:
    expect = store_expectation(loaded)
    stores = [
        FeatureStore.open(path, expect=expect, storage_options=cfg.storage_options)
        for path in cfg.stores
    ]
    for store in stores:
        store.require_labels("zeroshot")
    if cfg.dataset != "list" and not cfg.allow_protocol_mismatch:
        for path, store in zip(cfg.stores, stores, strict=True):
            problems = protocol_problems(store)
            if problems:
                raise ConfigError(
                    f"{path}: not the zero-shot protocol's sampling ({'; '.join(problems)}); "
                    "extract with --views 3x1 --frames 8, or pass --allow-protocol-mismatch"
                )
    return stores


def summarize(run: Path, close_set_top1: float | None = None) -> dict | None:
    """zs_hm over the protocol datasets this run has full-protocol results for, and the
    trade-off with the close-set top-1 (given, remembered from an earlier call, or the metrics).

    A result that covers only some splits or was made with --allow-protocol-mismatch is listed
    under ``excluded`` and not averaged.
    """
    folder = RunFolder(run)
    means, excluded, tfm = {}, {}, set()
    for name in ZERO_SHOT_SPLITS:
        result = folder.read_zeroshot(name)
        if result is None:
            continue
        if not result.get("protocol", False):
            excluded[name] = "not the full protocol (a split subset or other sampling)"
            continue
        means[name] = result["top1_mean"]
        tfm.add(result.get("tfm"))
    if not means and not excluded:
        return None
    previous = folder.read_zeroshot_summary() or {}
    if close_set_top1 is None:
        close_set_top1 = previous.get("close_set_top1")
    if close_set_top1 is None:
        close_set_top1 = (folder.read_metrics() or {}).get("top1")
    summary = {
        "datasets": means,
        "excluded": excluded,
        "zs_hm": harmonic_mean(list(means.values())) if len(means) > 1 else None,
        "close_set_top1": close_set_top1,
        "tradeoff": None,
        "complete": len(means) == len(ZERO_SHOT_SPLITS),
        "tfm": tfm.pop() if len(tfm) == 1 else "mixed",
    }
    if summary["zs_hm"] is not None and close_set_top1:
        summary["tradeoff"] = tradeoff(close_set_top1, summary["zs_hm"])
    return summary


def _split_result(
    cfg: ZeroShotConfig,
    loaded: Run,
    index: StoreIndex,
    name: str,
    dataset: DatasetSpec,
    device: torch.device,
) -> dict:
    """One split's metrics (its predictions saved when asked)."""
    data = index.select(dataset)
    if not data.video_ids:
        raise ConfigError(
            f"split {name}: none of its {len(dataset.items)} videos is done in "
            f"the given stores; check --store and the video ids"
        )
    scores = score(
        loaded.model, data.embeddings, data.labels, data.video_ids, data.text, cfg.tfm, device
    )
    if cfg.save_predictions is not None:
        save_predictions(
            split_predictions_path(cfg.save_predictions, name), scores, list(data.class_names)
        )
    return {
        "split": name,
        **scores.metrics(),
        "n_missing": len(data.missing),
        "classes": len(data.class_names),
        "rho_mean": float(scores.rho.mean()),
    }


@command_threads()
def run(cfg: ZeroShotConfig) -> dict:
    device = resolve_device(cfg.device)
    splits = _splits(cfg)  # bad names fail before anything is loaded
    check_predictions_path(cfg.save_predictions)
    loaded = load_run(cfg.run, device)
    use_threads(device, width=loaded.model.cfg.dim)
    override_tfm(loaded.model, cfg.tfm_gamma, cfg.tfm_k)
    index = StoreIndex(_open_stores(cfg, loaded))
    results = [_split_result(cfg, loaded, index, name, dataset, device) for name, dataset in splits]
    top1_mean, top1_std = mean_std([r["top1"] for r in results])
    top5_mean, _ = mean_std([r["top5"] for r in results])
    result = {
        "dataset": cfg.dataset,
        "splits": results,
        "top1_mean": top1_mean,
        "top1_std": top1_std,
        "top5_mean": top5_mean,
        "tfm": cfg.tfm,
        "views": index.stores[0].spec.layout,
        "run": str(cfg.run),
        "stores": [str(p) for p in cfg.stores],
        "protocol": cfg.dataset in ZERO_SHOT_SPLITS
        and not cfg.allow_protocol_mismatch
        and [name for name, _ in splits] == list(ZERO_SHOT_SPLITS[cfg.dataset]),
    }
    if cfg.save:
        folder = RunFolder(cfg.run)
        folder.write_zeroshot(cfg.dataset, result)
        summary = summarize(cfg.run, cfg.close_set_top1)
        if summary is not None:
            folder.write_zeroshot_summary(summary)
            result.update(
                zs_hm=summary["zs_hm"],
                tradeoff=summary["tradeoff"],
                close_set_top1=summary["close_set_top1"],
            )
    return result
