"""PNG plots (matplotlib, headless): training curves, zero-shot bars, the trade-off scatter and
confusion matrices.

Each plot is a ``draw_*`` function that returns the figure (tests read its axes, ticks and
legends) and a ``plot_*`` function that saves it. Rules every plot keeps: legends sit outside
the data area, epochs are whole numbers, every bar shows its value, and the title says what is
plotted, on which data, for which run.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

# A loss range narrower than this factor is drawn on a linear axis: a log axis over less than
# a decade shows one or two labels.
LOG_RANGE = 10.0
# Confusion matrices of at most this many classes get class names and counts in the cells.
NAMED_CLASSES = 40
CHANCE_GID = "chance"  # the gid of chance lines, so tests (and readers of the SVG) find them
TRADEOFF_GID = "equal-tradeoff"


# Characters of a 12-point title per inch of figure width (DejaVu Sans averages ~7 pt a character).
TITLE_CHARS_PER_INCH = 10


def save(fig: Figure, out: Path, dpi: int = 100) -> Path:
    """The PNG with every artist inside it: "tight" grows the canvas to a legend or title that
    reaches past the figure's edge instead of cutting it."""
    fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return out


def wrapped(title: str, fig: Figure, share: float = 1.0) -> str:
    """``title`` broken into lines that fit ``share`` of the figure's width."""
    width = max(24, int(fig.get_figwidth() * share * TITLE_CHARS_PER_INCH))
    return textwrap.fill(title, width)


# ------------------------------------------------------------------------------ curves


def plot_curves(rows: Sequence[Mapping], out: Path, title: str) -> Path:
    return save(draw_curves(rows, title), out)


def draw_curves(rows: Sequence[Mapping], title: str) -> Figure:
    """Loss terms (left) and train / validation top-1 (right) per epoch of a run's history."""
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    epochs = [row["epoch"] for row in rows]
    marker = "o" if len(epochs) <= 12 else None  # a 1-epoch line is otherwise invisible
    drawn: list[float] = []
    for key, label in (
        ("loss", "total"),
        ("loss_ce", "CE"),
        ("loss_wmr", "WMR CE"),
        ("loss_mse", "MSE"),
    ):
        values = [_number(row.get(key)) for row in rows]
        if any(v for v in values if v == v):
            losses.plot(epochs, values, label=label, marker=marker, ms=3)
            drawn += [v for v in values if v == v]
    _loss_axis(losses, drawn)
    losses.set_ylabel("training loss (mean over the epoch)")
    losses.set_title("losses")
    for key, label in (
        ("train_top1", "train (routed experts)"),
        ("val_top1", "validation (merged experts, 1 view)"),
    ):
        if key == "train_top1" or any(row.get(key) is not None for row in rows):
            values = [_number(row.get(key)) for row in rows]
            accuracy.plot(epochs, values, label=label, marker=marker, ms=3)
    accuracy.set_ylabel("top-1 (%)")
    accuracy.set_title("top-1 accuracy")
    for ax in (losses, accuracy):
        ax.set_xlabel("epoch")
        _epoch_ticks(ax, epochs)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    fig.suptitle(wrapped(title, fig))
    return fig


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _epoch_ticks(ax, epochs: Sequence[int]) -> None:
    """Whole epochs only; a short run shows each of its epochs."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
    if epochs:
        pad = 0.3 if len(epochs) <= 3 else 0.0
        ax.set_xlim(min(epochs) - pad, max(epochs) + pad)


def _loss_axis(ax, values: Sequence[float]) -> None:
    """Log scale when the losses span a decade or more, labelled at 1, 2 and 5 of each decade
    in plain numbers; linear otherwise."""
    positive = [v for v in values if v > 0]
    if not positive or len(positive) < len(values) or max(positive) / min(positive) < LOG_RANGE:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


# ------------------------------------------------------------------------------ zero-shot bars


def plot_zeroshot_bars(
    results: Mapping[str, Mapping[str, Sequence[tuple]]], out: Path, title: str | None = None
) -> Path:
    return save(draw_zeroshot_bars(results, title), out)


def draw_zeroshot_bars(
    results: Mapping[str, Mapping[str, Sequence[tuple]]], title: str | None = None
) -> Figure:
    """Zero-shot top-1 per split: one panel per dataset, one bar per run in each split group,
    each bar labelled with its value, and chance (100 / classes of the split) as a dotted line.

    ``results`` maps run label -> dataset name -> [(split, top1) or (split, top1, classes)].
    """
    datasets = _ordered_union(list(by_dataset) for by_dataset in results.values())
    runs = list(results)
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(max(4.5, 1.5 + 0.6 * len(runs)) * len(datasets), 5),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    width = 0.8 / max(1, len(runs))
    top = max((e[1] for r in runs for d in datasets for e in results[r].get(d, ())), default=1)
    chance_drawn = False
    for ax, dataset in zip(axes[0], datasets, strict=True):
        splits = _ordered_union([e[0] for e in results[r].get(dataset, ())] for r in runs)
        classes: dict[str, int] = {}
        for i, run in enumerate(runs):
            entries = results[run].get(dataset, ())
            values = {e[0]: float(e[1]) for e in entries}
            for e in entries:
                if len(e) > 2 and e[2]:
                    classes.setdefault(e[0], int(e[2]))
            xs = [j - 0.4 + width * (i + 0.5) for j, s in enumerate(splits) if s in values]
            ys = [values[s] for s in splits if s in values]
            bars = ax.bar(xs, ys, width=width, color=f"C{i % 10}")
            ax.bar_label(
                bars, fmt="%.1f", fontsize=7, padding=2, rotation=90 if len(runs) > 3 else 0
            )
        for j, split in enumerate(splits):
            if split in classes:
                ax.hlines(
                    100.0 / classes[split], j - 0.45, j + 0.45,
                    colors="black", linestyles=":", lw=1.5, gid=CHANCE_GID, zorder=3,
                )  # fmt: skip
                chance_drawn = True
        ax.set_xticks(range(len(splits)), splits)
        names = sorted(set(classes.values()))
        ax.set_title(dataset + (f" ({'/'.join(map(str, names))} classes)" if names else ""))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylim(0, top * 1.15 + 1)
    axes[0][0].set_ylabel("zero-shot top-1 (%)")
    handles = [Patch(color=f"C{i % 10}", label=run) for i, run in enumerate(runs)]
    if chance_drawn:
        handles.append(Line2D([], [], color="black", ls=":", lw=1.5, label="chance (100/classes)"))
    columns = min(len(handles), max(1, int(fig.get_figwidth() // 1.6)))
    fig.legend(handles=handles, loc="outside lower center", ncol=columns, fontsize="small")
    fig.suptitle(wrapped(title or "Zero-shot top-1 per test split (one bar per run)", fig))
    return fig


# ------------------------------------------------------------------------------ trade-off


def plot_tradeoff(
    points: Sequence[tuple[str, float, float]], out: Path, xlabel: str = "zero-shot HM top-1 (%)"
) -> list[dict]:
    """Figure 1(a) of the paper, saved; returns the points as read back from the drawn figure,
    so callers can check what was plotted."""
    fig = draw_tradeoff(points, xlabel)
    ax = fig.axes[0]
    dots = ax.collections[0]
    names = [t for t in ax.texts if t.get_gid() == "point-label"]
    drawn = [
        {"label": text.get_text(), "x": float(xy[0]), "y": float(xy[1])}
        for text, xy in zip(names, dots.get_offsets(), strict=True)
    ]
    save(fig, out)
    return drawn


def draw_tradeoff(
    points: Sequence[tuple[str, float, float]], xlabel: str = "zero-shot HM top-1 (%)"
) -> Figure:
    """Close-set top-1 (y) against zero-shot HM (x), one labelled point per (label, x, y),
    with dashed curves of equal trade-off (harmonic mean of x and y) where they fit."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    xs = [x for _, x, _ in points]
    ys = [y for _, _, y in points]
    ax.scatter(xs, ys, c=[f"C{i % 10}" for i in range(len(points))], s=40, zorder=3)
    curves = 0
    if points:
        _pad_limits(ax, xs, ys)
        curves = _iso_tradeoff(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("close-set top-1 (%)")
    ax.set_title(f"Close-set vs zero-shot top-1 of {len(points)} run(s)")
    ax.grid(alpha=0.3)
    if curves:
        key = Line2D([], [], ls="--", lw=0.8, color="0.5", label="equal trade-off\n(HM of x, y)")
        ax.legend(handles=[key], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.canvas.draw()  # layout first: the label placement measures text on the final axes
    _place_labels(ax, points)
    return fig


# Label offsets in points, tried in turn until a label overlaps no label placed before it.
_LABEL_OFFSETS = [(5, 4), (5, -12), (5, 14), (5, -22), (5, 24), (5, -32), (5, 34), (5, -42)]


def _place_labels(ax, points: Sequence[tuple[str, float, float]]) -> list:
    """Annotate each point beside it, moving a label up or down when it would cover another."""
    renderer = ax.figure.canvas.get_renderer()
    placed, boxes = [], []
    for label, x, y in points:
        for dx, dy in _LABEL_OFFSETS:
            text = ax.annotate(
                label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8
            )
            text.set_gid("point-label")
            box = text.get_window_extent(renderer).padded(4)  # a gap between two labels
            if not any(box.overlaps(other) for other in boxes) or (dx, dy) == _LABEL_OFFSETS[-1]:
                break
            text.remove()
        placed.append(text)
        boxes.append(box)
    return placed


def _pad_limits(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Leave room around the points (and for their labels on the right)."""
    span_x = max(max(xs) - min(xs), 2.0)
    span_y = max(max(ys) - min(ys), 2.0)
    ax.set_xlim(min(xs) - 0.15 * span_x, max(xs) + 0.45 * span_x)
    ax.set_ylim(min(ys) - 0.2 * span_y, max(ys) + 0.2 * span_y)


def _iso_tradeoff(ax, levels: int = 4) -> int:
    """Dashed curves 2xy / (x + y) = c across the visible area (y = c x / (2x - c)), each
    labelled with c; returns how many were drawn."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    low, high = _hm(x0, y0), _hm(x1, y1)
    drawn = 0
    if not 0 < low < high:
        return drawn
    for i in range(levels):
        c = low + (high - low) * (i + 0.5) / levels
        grid = [x0 + (x1 - x0) * k / 200 for k in range(201)]
        curve = [(x, c * x / (2 * x - c)) for x in grid if 2 * x > c]
        curve = [(x, y) for x, y in curve if y0 <= y <= y1]
        if len(curve) > 1:
            ax.plot(*zip(*curve, strict=True), ls="--", lw=0.8, color="0.5", zorder=1,
                    gid=TRADEOFF_GID)  # fmt: skip
            ax.annotate(f"{c:.1f}", curve[-1], xytext=(-2, 2), textcoords="offset points",
                        fontsize=7, color="0.4", ha="right")  # fmt: skip
            drawn += 1
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return drawn


def _hm(x: float, y: float) -> float:
    return 2 * x * y / (x + y) if x > 0 and y > 0 else 0.0


# ------------------------------------------------------------------------------ confusion


def plot_confusion(counts, class_names: Sequence[str], out: Path, title: str) -> Path:
    return save(draw_confusion(counts, class_names, title), out)


def draw_confusion(counts, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix (colour: share of the true class's videos); with at
    most ``NAMED_CLASSES`` classes the axes name the classes and each non-zero cell its count."""
    matrix = np.asarray(counts, dtype=np.int64)
    n = len(class_names)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.maximum(totals, 1)
    named = n <= NAMED_CLASSES
    side = min(14.0, max(5.0, 0.32 * n + 2.5)) if named else 9.0
    fig, ax = plt.subplots(figsize=(side + 1.5, side), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's videos")
    if named:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=8 if n <= 20 else 7)
        ax.set_yticks(range(n), class_names, fontsize=8 if n <= 20 else 7)
        size = 9 if n <= 12 else 7 if n <= 25 else 6
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=size, color=colour)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted class" + ("" if named else f" ({n} classes, store order)"))
    ax.set_ylabel("true class" + ("" if named else f" ({n} classes, store order)"))
    ax.set_title(wrapped(title, fig, share=0.8))
    return fig


def _ordered_union(groups) -> list[str]:
    """Names in order of first appearance across groups."""
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)
