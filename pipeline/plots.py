"""PNG plots (matplotlib, headless): training curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(history: Path, out: Path) -> Path:
    """Loss terms (left) and train / validation top-1 (right) per epoch."""
    rows = read_history(history)
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
    fig.suptitle(history.parent.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
