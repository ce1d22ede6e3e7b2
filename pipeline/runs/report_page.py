"""The Markdown page of ``mote report``: a results table, one section per run (its settings,
weakest classes and most-confused pairs) and notes on what is missing, from the rows
``summarize_run`` reads."""

from __future__ import annotations

from pathlib import Path

import torch

from mote.pipeline import __version__
from mote.pipeline.temporal.metrics import (
    per_class_top1,
    top_confusions,
)

BARS_FILE = "zeroshot_bars.png"
TRADEOFF_FILE = "tradeoff.png"
TOP_CONFUSIONS = 10  # confused class pairs listed per run in report.md
DATASET_ORDER = ("ucf101", "hmdb51", "k600")  # spec 8.4's HM ZS datasets, in the paper's order
DISPLAY = {"ucf101": "UCF101", "hmdb51": "HMDB51", "k600": "K600", "k400": "K400", "ssv2": "SSv2"}


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
            + [display_name(d) for d in datasets]
            + ["HM ZS", "trade-off"]
        ),
        _table_row(["---"] * (8 + len(datasets))),
    ]
    for r in rows:
        cells = [r["label"], r["switches"], millions(r["params_merged"]), _views(r)]
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
            f"{millions(r['params_merged'])} M merged, {millions(r['params_train'])} M trained",
        ),
        ("close-set top-1 / top-5", f"{_num(r['top1'])} / {_num(r['top5'])}"),
        ("close-set views, videos", f"{r['views'] or 'n/a'}, {r['n_videos'] or 'n/a'}"),
    ]
    for name, data in r["zeroshot"].items():
        facts.append((f"{display_name(name)} zero-shot", _zeroshot_cell(data)))
    if not r["zeroshot"]:
        facts.append(("zero-shot", "missing (run `mote zeroshot`)"))
    over = ", ".join(display_name(n) for n in r["hm_datasets"])
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
    return sorted(names, key=dataset_rank)


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


def millions(value: int | None) -> str:
    """A parameter count in millions as the report (and the demo's table) shows it."""
    return "n/a" if value is None else f"{value / 1e6:.2f}"


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def display_name(name: str) -> str:
    return DISPLAY.get(name, name)
