"""PNG plots (matplotlib, headless): training curves, zero-shot bars, the trade-off scatter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.patches import Patch  # noqa: E402


def plot_curves(rows: Sequence[Mapping], out: Path, title: str) -> Path:
    """Loss terms (left) and train / validation top-1 (right) per epoch of a run's history."""
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in rows]
    for key, label in (
        ("loss", "total"),
        ("loss_ce", "CE"),
        ("loss_wmr", "WMR CE"),
        ("loss_mse", "MSE"),
    ):
        values = [row.get(key) for row in rows]
        if any(v for v in values):
            losses.plot(epochs, values, label=label)
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.set_yscale(
        "log" if all((v or 0) > 0 for v in [r.get("loss") for r in rows]) else "linear"
    )
    losses.legend()
    accuracy.plot(epochs, [row.get("train_top1") for row in rows], label="train (routed)")
    if any(row.get("val_top1") is not None for row in rows):
        accuracy.plot(epochs, [row.get("val_top1") for row in rows], label="val (merged, 1 view)")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("top-1 (%)")
    accuracy.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_zeroshot_bars(
    results: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]], out: Path
) -> Path:
    """Zero-shot top-1 per split: one panel per dataset, one bar per run in each split group.

    ``results`` maps run label -> dataset name -> [(split, top1), ...].
    """
    datasets = _ordered_union(list(by_dataset) for by_dataset in results.values())
    runs = list(results)
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(max(4.0, 1.2 + 0.5 * len(runs)) * len(datasets), 4.5),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    width = 0.8 / max(1, len(runs))
    for ax, dataset in zip(axes[0], datasets, strict=True):
        splits = _ordered_union([s for s, _ in results[r].get(dataset, ())] for r in runs)
        for i, run in enumerate(runs):
            values = dict(results[run].get(dataset, ()))
            xs = [j - 0.4 + width * (i + 0.5) for j, s in enumerate(splits) if s in values]
            ys = [values[s] for s in splits if s in values]
            ax.bar(xs, ys, width=width, color=f"C{i % 10}")
        ax.set_xticks(range(len(splits)), splits)
        ax.set_title(dataset)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("zero-shot top-1 (%)")
    swatches = [Patch(color=f"C{i % 10}", label=run) for i, run in enumerate(runs)]
    fig.legend(handles=swatches, loc="outside right upper", fontsize="small")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_tradeoff(
    points: Sequence[tuple[str, float, float]], out: Path, xlabel: str = "zero-shot HM top-1 (%)"
) -> list[dict]:
    """Figure 1(a) of the paper: close-set top-1 (y) against zero-shot HM (x), one labelled
    point per (label, x, y), with dashed curves of equal trade-off (harmonic mean of x and y).

    Returns the points as read back from the drawn figure, so callers can check what was plotted.
    """
    fig, ax = plt.subplots(figsize=(7, 5.5))
    xs = [x for _, x, _ in points]
    ys = [y for _, _, y in points]
    dots = ax.scatter(xs, ys, c=[f"C{i % 10}" for i in range(len(points))], s=40, zorder=3)
    if points:
        _pad_limits(ax, xs, ys)
        _iso_tradeoff(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("close-set top-1 (%)")
    ax.set_title("zero-shot vs close-set (dashed: equal trade-off)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    names = _place_labels(ax, points)
    fig.savefig(out, dpi=100)
    drawn = [
        {"label": text.get_text(), "x": float(xy[0]), "y": float(xy[1])}
        for text, xy in zip(names, dots.get_offsets(), strict=True)
    ]
    plt.close(fig)
    return drawn


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
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in boxes) or (dx, dy) == _LABEL_OFFSETS[-1]:
                break
            text.remove()
        placed.append(text)
        boxes.append(box)
    return placed


def _ordered_union(groups) -> list[str]:
    """Names in order of first appearance across groups."""
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


def _pad_limits(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Leave room around the points (and for their labels on the right)."""
    span_x = max(max(xs) - min(xs), 2.0)
    span_y = max(max(ys) - min(ys), 2.0)
    ax.set_xlim(min(xs) - 0.15 * span_x, max(xs) + 0.45 * span_x)
    ax.set_ylim(min(ys) - 0.2 * span_y, max(ys) + 0.2 * span_y)


def _iso_tradeoff(ax, levels: int = 4) -> None:
    """Dashed curves 2xy / (x + y) = c across the visible area: y = c x / (2x - c)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    low, high = _hm(x0, y0), _hm(x1, y1)
    if not 0 < low < high:
        return
    for i in range(levels):
        c = low + (high - low) * (i + 0.5) / levels
        grid = [x0 + (x1 - x0) * k / 100 for k in range(101)]
        curve = [(x, c * x / (2 * x - c)) for x in grid if 2 * x > c]
        curve = [(x, y) for x, y in curve if y0 <= y <= y1]
        if len(curve) > 1:
            ax.plot(*zip(*curve, strict=True), ls="--", lw=0.8, color="0.6", zorder=1)
            ax.annotate(f"{c:.1f}", curve[-1], fontsize=7, color="0.5")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _hm(x: float, y: float) -> float:
    return 2 * x * y / (x + y) if x > 0 and y > 0 else 0.0
