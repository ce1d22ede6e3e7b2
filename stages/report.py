"""``mote report``: one Markdown page and PNG plots that compare runs at a glance.

Reads only the files runs leave behind (config, history, metrics and the zero-shot results of
``mote zeroshot``, and the retrieval numbers ``mote search --eval`` adds to metrics.json, all
through ``RunFolder``), so an ablation set (the paper's Table 1 rows, say)
can be compared without loading a model. A run
without zero-shot results is reported close-set only and left out of the trade-off scatter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.plots import plot_confusion, plot_tradeoff, plot_zeroshot_bars
from mote.pipeline.runs.report_page import (
    BARS_FILE,
    DATASET_ORDER,
    TRADEOFF_FILE,
    dataset_rank,
    display_name,
    render_markdown,
)
from mote.pipeline.runs.run_config import RunConfig
from mote.pipeline.runs.run_files import make_folder, write_atomic, writing
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.runs.run_labels import describe_switches, unique_labels
from mote.pipeline.temporal.metrics import (
    harmonic_mean,
    mean_std,
    tradeoff,
)
from mote.stages.configs.report_config import ReportConfig  # noqa: F401

REPORT_FILE = "report.md"


def run(cfg: ReportConfig) -> dict:
    """Write ``OUT/report.md`` and its PNG plots; return their paths and one row per run."""
    if not cfg.runs:
        raise ConfigError("mote report: no run folder given; pass one or more RUN folders")
    out = Path(cfg.out)
    make_folder(out)
    paths = [Path(p) for p in cfg.runs]
    rows = [summarize_run(p, label) for p, label in zip(paths, unique_labels(paths), strict=True)]
    plots: list[str] = []
    for row in rows:
        folder = RunFolder(row["path"])
        if folder.read_history():
            curves = folder.write_curves(row["label"], out / f"curves_{row['label']}.png")
            row["curves"] = str(curves)
            plots.append(row["curves"])
        if row["confusion"] is not None:
            row["confusion_png"] = str(_confusion_png(row, out))
            plots.append(row["confusion_png"])
    bars = {r["label"]: _split_values(r) for r in rows if r["zeroshot"]}
    if bars:
        title = f"Zero-shot top-1 per test split of {len(bars)} run(s) (one bar per run)"
        plots.append(str(plot_zeroshot_bars(bars, out / BARS_FILE, title)))
    points = tradeoff_points(rows)
    scatter: list[dict] = []
    if points:
        scatter = plot_tradeoff(points, out / TRADEOFF_FILE, _x_label(rows))
        plots.append(str(out / TRADEOFF_FILE))
    report = out / REPORT_FILE
    write_atomic(report, render_markdown(rows, bars=bool(bars), scatter=bool(points)).encode())
    return {"report": str(report), "plots": plots, "runs": rows, "scatter": scatter}


# ------------------------------------------------------------------------------ reading runs


def summarize_run(path: Path, label: str) -> dict:
    """One report row from a run folder's files; zero-shot fields are empty when absent."""
    folder = RunFolder(path)
    config = folder.read_config()
    folder.check_weights()  # a report of a run whose weights are damaged would mislead
    model_config = dataclasses.asdict(config.model) if config.model else {"arch": config.arch}
    metrics = folder.read_metrics() or {}
    zeroshot = read_zeroshot(path)
    summary = folder.read_zeroshot_summary()
    for name, mean in ((summary or {}).get("datasets") or {}).items():
        zeroshot.setdefault(name, {"top1_mean": float(mean), "top1_std": None, "splits": []})
    zeroshot = dict(sorted(zeroshot.items(), key=lambda item: dataset_rank(item[0])))
    top1 = metrics.get("top1")
    if top1 is None and summary:
        top1 = summary.get("close_set_top1")  # e.g. an imported run's published number
    zs_hm, hm_over = _zs_hm(zeroshot, summary)
    trade = None
    if zs_hm is not None and top1 is not None:
        trade = tradeoff(float(top1), float(zs_hm))
    tfm = _tfm(zeroshot, metrics, config)
    history = _history_facts(folder.read_history())
    confusion = folder.read_confusion()
    return {
        "label": label,
        "path": str(path),
        "source": config.source,
        "arch": config.arch,
        "switches": describe_switches(model_config, tfm=tfm),
        "params_merged": config.params_merged,
        "params_train": config.params_train,
        "top1": top1,
        "top5": metrics.get("top5"),
        "views": metrics.get("views"),
        "n_videos": metrics.get("n_videos"),
        "zeroshot": zeroshot,
        "zs_hm": zs_hm,
        "hm_datasets": hm_over,
        "tradeoff": trade,
        "tfm": tfm,
        "retrieval": metrics.get("retrieval") or {},
        **history,
        "curves": None,
        "confusion": confusion,
        "confusion_png": None,
    }


def _confusion_png(row: dict, out: Path) -> Path:
    """The run's final-evaluation confusion matrix as a PNG in the report folder."""
    confusion = row["confusion"]
    where = Path(str(confusion.get("store") or "its validation store")).name
    views = f", {confusion['views']} views" if confusion.get("views") else ""
    title = f"Confusion matrix of run {row['label']} on {where}{views} (rows: true class)"
    target = out / f"confusion_{row['label']}.png"
    with writing(target):
        return plot_confusion(confusion["counts"], confusion["class_names"], target, title)


def _zs_hm(zeroshot: dict[str, dict], summary: dict | None) -> tuple[float | None, list[str]]:
    """HM ZS and the datasets it is over: the summary's when it has one, else the harmonic
    mean of the protocol datasets' means (UCF101, HMDB51, K600; spec 8.4) that the run has,
    or of every dataset when it has none of those. One dataset: its mean."""
    if summary and summary.get("zs_hm") is not None:
        return float(summary["zs_hm"]), list(summary.get("datasets") or zeroshot)
    names = [n for n in zeroshot if n in DATASET_ORDER] or list(zeroshot)
    if not names:
        return None, []
    return harmonic_mean([zeroshot[n]["top1_mean"] for n in names]), names


def read_zeroshot(path: Path) -> dict[str, dict]:
    """Zero-shot results of a run: dataset -> {top1_mean, top1_std, splits, ...}."""
    results: dict[str, dict] = {}
    for name, file, data in RunFolder(path).zeroshot_results():
        splits = [s for s in data.get("splits") or [] if s.get("top1") is not None]
        mean, std = data.get("top1_mean"), data.get("top1_std")
        if mean is None:
            if not splits:
                raise ConfigError(
                    f"{file}: no top1_mean and no per-split top1; rerun `mote zeroshot` for "
                    f"this run, or delete the file"
                )
            mean, std = mean_std([float(s["top1"]) for s in splits])
        results[name] = {
            "top1_mean": float(mean),
            "top1_std": None if std is None else float(std),
            "splits": splits,
            "tfm": data.get("tfm"),
            "views": data.get("views"),
        }
    return results


def _tfm(zeroshot: dict[str, dict], metrics: dict, config: RunConfig) -> bool:
    """Whether the reported numbers used TFM: zero-shot files first, then the close-set ones."""
    flags = [d["tfm"] for d in zeroshot.values() if d.get("tfm") is not None]
    if flags:
        return all(flags)
    if metrics.get("tfm") is not None:
        return bool(metrics["tfm"])
    return bool(config.train.get("tfm", True))


def _history_facts(rows: list[dict]) -> dict:
    """Epochs, training time and best validation top-1 from a run's history."""
    if not rows:
        return {"epochs": None, "train_seconds": None, "best_val_top1": None}
    vals = [r["val_top1"] for r in rows if r.get("val_top1") is not None]
    return {
        "epochs": len(rows),
        "train_seconds": round(sum(r.get("seconds") or 0.0 for r in rows), 1),
        "best_val_top1": max(vals) if vals else None,
    }


def _split_values(row: dict) -> dict[str, list[tuple[str, float, int | None]]]:
    """Dataset -> [(split, top-1, classes of the split or None)] for the bars."""
    return {
        display_name(name): [
            (s["split"], float(s["top1"]), s.get("classes")) for s in data["splits"]
        ]
        for name, data in row["zeroshot"].items()
        if data["splits"]
    }


# ------------------------------------------------------------------------------ scatter


def tradeoff_points(rows: list[dict]) -> list[tuple[str, float, float]]:
    """(label, zero-shot HM, close-set top-1) for each run that has both numbers.

    The label is "RUN: arch + switches"; with one zero-shot dataset the HM is its mean.
    """
    return [
        (f"{r['label']}: {r['switches']}", float(r["zs_hm"]), float(r["top1"]))
        for r in rows
        if r["zs_hm"] is not None and r["top1"] is not None
    ]


def _x_label(rows: list[dict]) -> str:
    sets = {
        tuple(r["hm_datasets"]) for r in rows if r["zs_hm"] is not None and r["top1"] is not None
    }
    if len(sets) != 1:
        return "zero-shot HM top-1 (%) (runs differ in zero-shot datasets: see report.md)"
    (names,) = sets
    if len(names) == 1:
        return f"zero-shot top-1 (%), {display_name(names[0])} (mean over splits)"
    return f"zero-shot HM top-1 (%) of {', '.join(display_name(n) for n in names)}"
