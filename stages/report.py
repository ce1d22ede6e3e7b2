"""``mote report``: one Markdown page and PNG plots that compare runs at a glance.

Reads only the files runs leave behind (config, history, metrics and the zero-shot results of
``mote zeroshot``, and the retrieval numbers ``mote search --eval`` adds to metrics.json, all
through ``RunFolder``), so an ablation set (the paper's Table 1 rows, say)
can be compared without loading a model. A run
without zero-shot results is reported close-set only and left out of the trade-off scatter.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mote.pipeline import __version__
from mote.pipeline.config import Settings, setting
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.files import make_folder, write_atomic, writing
from mote.pipeline.runs.plots import plot_confusion, plot_tradeoff, plot_zeroshot_bars
from mote.pipeline.runs.run_config import RunConfig
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.config import MoTEConfig, default_config
from mote.pipeline.temporal.metrics import (
    harmonic_mean,
    mean_std,
    per_class_top1,
    top_confusions,
    tradeoff,
)

REPORT_FILE = "report.md"
BARS_FILE = "zeroshot_bars.png"
TRADEOFF_FILE = "tradeoff.png"
TOP_CONFUSIONS = 10  # confused class pairs listed per run in report.md
DATASET_ORDER = ("ucf101", "hmdb51", "k600")  # spec 8.4's HM ZS datasets, in the paper's order
DISPLAY = {"ucf101": "UCF101", "hmdb51": "HMDB51", "k600": "K600", "k400": "K400", "ssv2": "SSv2"}

# Switches each architecture actually uses (spec 10.1: the baselines train with CE only).
_MOTE_ONLY = (
    "experts",
    "routing",
    "expert_init",
    "inference",
    "wmr",
    "wmr_beta",
    "wmr_temperatures",
    "wmr_loss",
    "mse",
    "loss_weights",
)
_WMR_ONLY = ("wmr_beta", "wmr_temperatures", "wmr_loss")
_TEMPORAL = ("layers", "heads", "context", "tfm_k", "tfm_gamma")
_NOT_SWITCHES = ("dim", "arch")


@dataclass(frozen=True)
class ReportConfig(Settings):
    """Settings of ``mote report``: the run folders to compare and where the report goes."""

    runs: tuple[Path, ...] = setting(
        help="Run folders to compare (one or more).", argument=True, metavar="RUN"
    )
    out: Path = setting(Path("mote-report"), "Folder for report.md and PNGs.")


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


# ------------------------------------------------------------------------------ labels


def unique_labels(paths: list[Path]) -> list[str]:
    """Folder names, made safe for file names and unique with -2, -3, ... suffixes."""
    labels: list[str] = []
    for path in paths:
        base = re.sub(r"[^\w.+-]", "_", Path(path).resolve().name) or "run"
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


def describe_switches(model_config: dict, tfm: bool = True) -> str:
    """The arch and every switch that differs from MoTEConfig's defaults, e.g. "mote N=4 -wmr".

    Switches the arch ignores are left out (a transformer baseline is just "transformer");
    sizes are compared with the default for the config's width. ``tfm=False`` adds "-tfm" for
    archs that TFM applies to.
    """
    arch = model_config.get("arch", "mote")
    reference = _defaults(model_config)
    parts = [
        f"{arch} N={model_config.get('experts', reference['experts'])}" if arch == "mote" else arch
    ]
    for name, value in model_config.items():
        if name not in reference or name in _NOT_SWITCHES or name == "experts":
            continue
        if not _applies(name, arch, model_config):
            continue
        default = reference[name]
        if _same(value, default):
            continue
        parts.append(_token(name, value))
    if not tfm and arch != "meanpool":
        parts.append("-tfm")
    return " ".join(parts)


def _defaults(model_config: dict) -> dict[str, Any]:
    """MoTEConfig defaults, with the width's default sizes (spec 2.1) when the width is known."""
    dim = model_config.get("dim")
    if isinstance(dim, int) and dim > 0:
        return dataclasses.asdict(default_config(dim))
    return {
        f.name: f.default
        for f in dataclasses.fields(MoTEConfig)
        if f.default is not dataclasses.MISSING
    }


def _applies(name: str, arch: str, model_config: dict) -> bool:
    if arch == "meanpool":
        return name == "logit_scale_init"
    if arch != "mote" and name in _MOTE_ONLY:
        return False
    if name in _WMR_ONLY and not model_config.get("wmr", True):
        return False
    return True


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple | list):
        return [float(v) for v in value] == [float(v) for v in default]
    if isinstance(default, float):
        return abs(float(value) - default) < 1e-9
    return value == default


def _token(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"+{name}" if value else f"-{name}"
    if name == "layers":
        return f"L={value}"
    if isinstance(value, tuple | list):
        return f"{name}={','.join(f'{float(v):g}' for v in value)}"
    if isinstance(value, float):
        return f"{name}={value:g}"
    return f"{name}={value}"


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
    zeroshot = dict(sorted(zeroshot.items(), key=lambda item: _dataset_rank(item[0])))
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


def _dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _split_values(row: dict) -> dict[str, list[tuple[str, float, int | None]]]:
    """Dataset -> [(split, top-1, classes of the split or None)] for the bars."""
    return {
        _display(name): [(s["split"], float(s["top1"]), s.get("classes")) for s in data["splits"]]
        for name, data in row["zeroshot"].items()
        if data["splits"]
    }


def _display(name: str) -> str:
    return DISPLAY.get(name, name)


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
        return f"zero-shot top-1 (%), {_display(names[0])} (mean over splits)"
    return f"zero-shot HM top-1 (%) of {', '.join(_display(n) for n in names)}"


# ------------------------------------------------------------------------------ markdown


def render_markdown(rows: list[dict], bars: bool, scatter: bool) -> str:
    """The report: an overview table, the shared plots, then one table per run."""
    datasets = _dataset_union(rows)
    lines = [
        "# mote report",
        "",
        f"{len(rows)} run(s), written by mote {__version__}. Accuracies are top-1 in percent; "
        "zero-shot columns are the mean ± std over splits; HM ZS is the harmonic mean of the "
        "zero-shot means, trade-off the harmonic mean of close-set top-1 and HM ZS (spec 8.4).",
        "",
        "## Overview",
        "",
        _table_row(
            ["run", "model", "params (M, merged)", "close-set views", "close-set top-1", "top-5"]
            + [_display(d) for d in datasets]
            + ["HM ZS", "trade-off"]
        ),
        _table_row(["---"] * (8 + len(datasets))),
    ]
    for r in rows:
        cells = [r["label"], r["switches"], _millions(r["params_merged"]), _views(r)]
        cells += [_num(r["top1"]), _num(r["top5"])]
        cells += [_mean_std(r["zeroshot"].get(d)) for d in datasets]
        cells += [_num(r["zs_hm"]), _num(r["tradeoff"])]
        lines.append(_table_row(cells))
    lines += ["", *_views_note(rows), *_missing_lines(rows)]
    if scatter:
        lines += ["![zero-shot vs close-set trade-off](" + TRADEOFF_FILE + ")", ""]
    if bars:
        lines += ["![zero-shot top-1 per split](" + BARS_FILE + ")", ""]
    for r in rows:
        lines += _run_section(r)
    return "\n".join(lines).rstrip() + "\n"


def _missing_lines(rows: list[dict]) -> list[str]:
    missing = []
    for r in rows:
        if r["zs_hm"] is None:
            missing.append(f"- {r['label']}: missing zero-shot results (run `mote zeroshot`)")
        elif r["top1"] is None:
            missing.append(f"- {r['label']}: missing close-set top-1 (no validation store)")
    if not missing:
        return []
    return ["Not in the trade-off scatter:", "", *missing, ""]


def _run_section(r: dict) -> list[str]:
    facts = [
        ("folder", f"`{r['path']}`"),
        ("source", r["source"] or "n/a"),
        ("arch", r["arch"]),
        ("switches", r["switches"]),
        (
            "params",
            f"{_millions(r['params_merged'])} M merged, {_millions(r['params_train'])} M trained",
        ),
        ("close-set top-1 / top-5", f"{_num(r['top1'])} / {_num(r['top5'])}"),
        ("close-set views, videos", f"{r['views'] or 'n/a'}, {r['n_videos'] or 'n/a'}"),
    ]
    for name, data in r["zeroshot"].items():
        facts.append((f"{_display(name)} zero-shot", _zeroshot_cell(data)))
    if not r["zeroshot"]:
        facts.append(("zero-shot", "missing (run `mote zeroshot`)"))
    over = ", ".join(_display(n) for n in r["hm_datasets"])
    facts.append(("HM ZS", _num(r["zs_hm"]) + (f" (over {over})" if over else "")))
    facts.append(("trade-off", _num(r["tradeoff"])))
    for store, data in r["retrieval"].items():
        facts.append((f"text -> video retrieval on `{store}`", _retrieval_cell(data)))
    if r["epochs"] is not None:
        facts.append(
            (
                "training",
                f"{r['epochs']} epochs, {_num(r['train_seconds'], 1)} s, "
                f"best val top-1 {_num(r['best_val_top1'])}",
            )
        )
    lines = [f"## {r['label']}", "", _table_row(["", ""]), _table_row(["---", "---"])]
    lines += [_table_row([key, value]) for key, value in facts]
    if r["curves"]:
        lines += ["", f"![training curves of {r['label']}]({Path(r['curves']).name})"]
    elif r["epochs"] is None:
        lines += ["", "No training history (an imported or untrained run)."]
    if r["confusion"] is not None:
        lines += ["", *_confusion_lines(r)]
    return lines + [""]


def _confusion_lines(r: dict) -> list[str]:
    """The confusion matrix PNG, the weakest classes and the most confused pairs."""
    confusion = r["confusion"]
    counts = torch.tensor(confusion["counts"], dtype=torch.long)
    names = confusion["class_names"]
    lines = [f"![confusion matrix of {r['label']}]({Path(r['confusion_png']).name})", ""]
    scored = [c for c in per_class_top1(counts, names) if c["top1"] is not None]
    weakest = sorted(scored, key=lambda c: c["top1"])[:5]
    if weakest:
        cells = ", ".join(f"{c['class']} {c['top1']:.1f} ({c['n_videos']})" for c in weakest)
        lines += [f"Lowest per-class top-1 (videos): {cells}.", ""]
    pairs = top_confusions(counts, names, TOP_CONFUSIONS)
    if pairs:
        lines += [
            "Most confused pairs (final evaluation):",
            "",
            _table_row(["true class", "predicted as", "videos", "% of the true class"]),
            _table_row(["---"] * 4),
        ]
        lines += [
            _table_row([p["true"], p["predicted"], str(p["n_videos"]), f"{p['share_of_true']:.1f}"])
            for p in pairs
        ]
    return lines


def _retrieval_cell(data: dict) -> str:
    """``mote search --eval``'s numbers: class names as queries against that class's videos."""
    return (
        f"mAP {_num(data.get('map'))}, P@10 {_num(data.get('p@10'))}, P@50 "
        f"{_num(data.get('p@50'))} (chance {_num(data.get('chance_precision'))}); zero-shot "
        f"top-1 {_num(data.get('zeroshot_top1'))} ({data.get('classes')} classes, "
        f"{data.get('n_videos')} videos)"
    )


def _zeroshot_cell(data: dict) -> str:
    text = _num(data["top1_mean"]) if len(data["splits"]) == 1 else _mean_std(data)
    if data["splits"]:
        splits = ", ".join(f"{s['split']} {float(s['top1']):.2f}" for s in data["splits"])
        text += f" ({splits})"
    extras = [str(data["views"])] if data.get("views") else []
    if data.get("tfm") is not None:
        extras.append("TFM" if data["tfm"] else "no TFM")
    return text + (f"; {', '.join(extras)}" if extras else "")


def _dataset_union(rows: list[dict]) -> list[str]:
    names = {name for r in rows for name in r["zeroshot"]}
    return sorted(names, key=_dataset_rank)


def _mean_std(data: dict | None) -> str:
    if data is None:
        return "n/a"
    if len(data["splits"]) == 1:
        return f"{data['top1_mean']:.2f} (1 split)"
    if data.get("top1_std") is None:
        return _num(data["top1_mean"])
    return f"{data['top1_mean']:.2f} ± {data['top1_std']:.2f}"


def _views(row: dict) -> str:
    """The views a close-set number fused: 1x1 is one view, 3x1 three clips fused."""
    return row["views"] or "n/a"


def _views_note(rows: list[dict]) -> list[str]:
    """A note when the close-set numbers side by side fused different views."""
    layouts = sorted({r["views"] for r in rows if r["top1"] is not None and r["views"]})
    if len(layouts) < 2:
        return []
    return [
        f"Close-set numbers of different views ({', '.join(layouts)}) are not comparable: "
        "compare rows with the same views (evaluate a run on another store with "
        "`mote evaluate --run RUN --store STORE`).",
        "",
    ]


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _millions(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f}"


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
