"""The report's plots, read back from their matplotlib figures, on a real trained run; per-class
results and confusion matrices of `mote evaluate --per-class` and of training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_store
from PIL import Image
from typer.testing import CliRunner

from mote.pipeline.errors import RunFileError
from mote.pipeline.runs.plots import (
    CHANCE_GID,
    TRADEOFF_GID,
    draw_confusion,
    draw_curves,
    draw_tradeoff,
    draw_zeroshot_bars,
)
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.metrics import confusion_matrix, per_class_top1, top_confusions
from mote.stages import evaluate, report, train_temporal
from mote.stages.cli import app

CLASSES = tuple(f"class_{i}" for i in range(6))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-epoch run on a real store of random features, validated on a 3-view store."""
    work = tmp_path_factory.mktemp("plots")
    ids = [f"v{i}" for i in range(48)]
    labels = [i % len(CLASSES) for i in range(48)]
    random_store(work / "train.zarr", ids, labels, CLASSES, seed=1)
    # 30 videos, uneven per class: the per-class counts are not all equal
    val_labels = [0] * 8 + [1] * 6 + [2] * 5 + [3] * 5 + [4] * 4 + [5] * 2
    random_store(work / "val.zarr", ids[:30], val_labels, CLASSES, views=(3, 1), seed=2)
    out = work / "run"
    train_temporal.run(
        train_temporal.TrainConfig(
            train=work / "train.zarr",
            val=work / "val.zarr",
            out=out,
            layers=1,
            epochs=3,
            warmup_epochs=1,
            batch_size=16,
            lr=1e-3,
            device="cpu",
        )
    )
    return out, work / "val.zarr"


def tick_labels(axis) -> list[str]:
    """The labels of the major ticks inside the axis's view, as drawn."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks()
    return [
        t.label1.get_text() for t, v in zip(ticks, axis.get_majorticklocs(), strict=False)
        if lo <= v <= hi and t.label1.get_visible() and t.label1.get_text()
    ]  # fmt: skip


def legend_clear_of_data(fig, ax, legend) -> bool:
    """The legend's drawn box does not cover the axes' data area."""
    renderer = fig.canvas.get_renderer()
    return not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_curves_have_whole_epochs_readable_losses_outside_legends_and_a_real_title(trained):
    run, _ = trained
    folder = RunFolder(run)
    rows = folder.read_history()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    fig = draw_curves(rows, "Training curves of run run: " + folder.describe())
    fig.canvas.draw()
    losses, accuracy = fig.axes
    for ax in (losses, accuracy):
        labels = tick_labels(ax.xaxis)
        assert labels == ["1", "2", "3"], labels  # whole epochs only, each one
        assert legend_clear_of_data(fig, ax, ax.get_legend())
    # total loss ~ 25 and MSE ~ 1 span more than a decade: log, labelled 1, 2, 5, 10, 20
    assert losses.get_yscale() == "log"
    numbers = [float(t) for t in tick_labels(losses.yaxis)]
    assert len(numbers) >= 3 and {1.0, 10.0} <= set(numbers)
    title = fig._suptitle.get_text()
    assert "run run" in title and "train.zarr" in title and "val.zarr" in title

    # a loss range inside a decade is linear, with several labels
    flat = [dict(epoch=e, loss=2.2 - 0.05 * e, train_top1=10.0 * e) for e in range(1, 8)]
    fig = draw_curves(flat, "flat")
    fig.canvas.draw()
    assert fig.axes[0].get_yscale() == "linear"
    assert len(tick_labels(fig.axes[0].yaxis)) >= 4
    assert all(float(t).is_integer() for t in tick_labels(fig.axes[0].xaxis))
    # the written file (train-temporal drew it at the end of the run) is a sane PNG
    with Image.open(folder.curves_file) as image:
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 350


def test_zeroshot_bars_show_values_and_chance_per_split():
    results = {
        "a": {"UCF101": [("test1", 61.25, 101), ("test2", 60.0, 101)], "K600": [("s1", 40.0, 160)]},
        "b": {"UCF101": [("test1", 70.5, 101), ("test2", 71.0, 101)], "K600": [("s1", 44.0, 160)]},
    }
    fig = draw_zeroshot_bars(results, "Zero-shot top-1 per test split of 2 run(s)")
    fig.canvas.draw()
    ucf, k600 = fig.axes
    assert sorted(v for c in ucf.containers for v in c.datavalues) == [60.0, 61.25, 70.5, 71.0]
    drawn = sorted(t.get_text() for t in ucf.texts)
    assert drawn == ["60.0", "61.2", "70.5", "71.0"]  # each bar's value, printed on it
    for ax, classes, groups in ((ucf, 101, 2), (k600, 160, 1)):
        chance = [c for c in ax.collections if c.get_gid() == CHANCE_GID]
        assert len(chance) == groups
        for line in chance:
            (segment,) = line.get_segments()
            assert segment[:, 1] == pytest.approx([100 / classes] * 2)
    assert "101 classes" in ucf.get_title() and "160 classes" in k600.get_title()
    assert "chance (100/classes)" in [t.get_text() for t in fig.legends[0].get_texts()]
    renderer = fig.canvas.get_renderer()
    box = fig.legends[0].get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_tradeoff_draws_the_dashed_curves_its_legend_names():
    points = [("a: mote N=4", 74.4, 86.8), ("b: transformer", 66.0, 86.7)]
    fig = draw_tradeoff(points)
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_gid() == TRADEOFF_GID]
    assert dashed and all(line.get_linestyle() == "--" for line in dashed)
    (key,) = ax.get_legend().get_lines()
    assert key.get_linestyle() == "--" and "equal trade-off" in ax.get_legend().texts[0].get_text()
    assert legend_clear_of_data(fig, ax, ax.get_legend())
    # each dashed curve is a curve of equal harmonic mean
    for line in dashed:
        x, y = line.get_xdata(), line.get_ydata()
        hm = 2 * x * y / (x + y)
        assert np.ptp(hm) < 1e-6
    assert "dashed" not in ax.get_title()  # the title promises nothing the plot may lack


def test_confusion_matrix_names_classes_when_few_and_hides_them_when_many():
    counts = [[3, 1, 0], [0, 2, 2], [1, 0, 4]]
    fig = draw_confusion(counts, ["run", "jump", "swim"], "Confusion matrix of run x on val")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["run", "jump", "swim"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["run", "jump", "swim"]
    assert sorted(int(t.get_text()) for t in ax.texts) == [1, 1, 2, 2, 3, 4]
    shares = ax.images[0].get_array()
    assert np.asarray(shares).sum(axis=1).tolist() == pytest.approx([1, 1, 1])  # row shares
    many = np.eye(60, dtype=np.int64) * 2
    fig = draw_confusion(many, [f"c{i}" for i in range(60)], "many")
    assert fig.axes[0].get_xticks().size == 0 and not fig.axes[0].texts


def test_confusion_counts_with_bincount():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 1, 2])
    confusion = confusion_matrix(scores, labels)
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    rows = per_class_top1(confusion, ["a", "b", "c"])
    assert [(r["n_videos"], r["top1"]) for r in rows] == [(1, 100.0), (2, 50.0), (1, 0.0)]
    pairs = top_confusions(confusion, ["a", "b", "c"], k=5)
    assert {(p["true"], p["predicted"], p["n_videos"]) for p in pairs} == {
        ("b", "c", 1),
        ("c", "a", 1),
    }
    with pytest.raises(ValueError, match="labels must lie in"):
        confusion_matrix(scores, torch.tensor([0, 1, 3, 2]))


def test_evaluate_per_class_adds_up_to_top1(trained, tmp_path):
    run, val = trained
    predictions = tmp_path / "pred.npz"
    result = evaluate.run(
        evaluate.EvaluateConfig(
            run=run, store=val, device="cpu", per_class=True, save_predictions=predictions
        )
    )
    rows = result["per_class"]
    assert [r["class"] for r in rows] == list(CLASSES)
    assert [r["n_videos"] for r in rows] == [8, 6, 5, 5, 4, 2]
    hits = sum(r["top1"] * r["n_videos"] / 100 for r in rows)
    assert hits == pytest.approx(round(hits))
    assert 100 * hits / result["n_videos"] == pytest.approx(result["top1"])
    counts = np.array(result["confusion"]["counts"])
    assert counts.sum() == 30 and np.trace(counts) == round(hits)
    assert result["confusion"]["class_names"] == list(CLASSES)
    saved = np.load(predictions)
    assert (saved["confusion"] == counts).all()
    assert saved["class_videos"].tolist() == [8, 6, 5, 5, 4, 2]
    assert (np.bincount(saved["labels"], minlength=6) == saved["class_videos"]).all()
    assert (saved["class_correct"] == np.diag(counts)).all()
    # without --per-class the result is as before
    plain = evaluate.run(evaluate.EvaluateConfig(run=run, store=val, device="cpu"))
    assert "per_class" not in plain and plain["top1"] == result["top1"]
    # the terminal table lists every class with its count
    cli = CliRunner().invoke(
        app, ["evaluate", "--run", str(run), "--store", str(val), "--device", "cpu", "--per-class"]
    )
    assert cli.exit_code == 0, cli.output
    assert "per-class top-1" in cli.output
    for row in rows:
        assert row["class"] in cli.output


def test_training_saves_its_confusion_and_report_draws_it(trained, tmp_path):
    run, val = trained
    folder = RunFolder(run)
    saved = folder.read_confusion()
    metrics = folder.read_metrics()
    counts = np.array(saved["counts"])
    assert saved["class_names"] == list(CLASSES) and saved["views"] == "3x1"
    assert counts.sum() == metrics["n_videos"] == 30
    assert 100 * np.trace(counts) / counts.sum() == pytest.approx(metrics["top1"])
    result = report.run(report.ReportConfig((run,), tmp_path / "report"))
    png = tmp_path / "report" / "confusion_run.png"
    assert str(png) in result["plots"]
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) >= 400
    md = Path(result["report"]).read_text()
    assert "![confusion matrix of run](confusion_run.png)" in md
    if np.trace(counts) < counts.sum():
        assert "Most confused pairs" in md
    # a damaged confusion file is one line naming it
    folder.confusion_file.write_text(json.dumps({"class_names": ["a"], "counts": [[1, 2]]}))
    try:
        with pytest.raises(RunFileError, match="confusion.json: not a confusion matrix"):
            report.run(report.ReportConfig((run,), tmp_path / "report2"))
    finally:
        folder.confusion_file.write_text(json.dumps(saved))
