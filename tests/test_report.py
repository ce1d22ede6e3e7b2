"""`mote report` on hand-written run folders holding the paper's Table 1 and spec 8.4 numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import CONFIG_FILE
from mote.pipeline.runs.run_labels import describe_switches
from mote.pipeline.temporal.temporal_config import default_config
from mote.stages import report, zeroshot
from mote.stages.cli import app
from mote.stages.report import ReportConfig

L14 = 768


def model_config(**overrides) -> dict:
    """A real MoTEConfig for ViT-L/14 features, as config.json holds it (JSON round trip)."""
    return json.loads(json.dumps(dataclasses.asdict(default_config(L14, **overrides))))


def write_run(
    folder: Path,
    mcfg: dict,
    top1: float | None,
    zeroshot: dict[str, list[float]] | None = None,
    tfm: bool = True,
    epochs: int = 3,
) -> Path:
    """A run folder as train-temporal (+ zeroshot) leaves it; ``zeroshot``: dataset -> splits."""
    folder.mkdir(parents=True)
    config = {
        "source": "train-temporal",
        "arch": mcfg["arch"],
        "model_config": mcfg,
        "train": {"tfm": tfm, "epochs": epochs},
        "clip": {"model": "ViT-L-14", "pretrained": "openai", "dim": L14},
        "params_merged": 42_586_368 if mcfg["arch"] != "meanpool" else 0,
        "params_train": 127_600_000 if mcfg["arch"] == "mote" else 42_586_368,
    }
    (folder / "config.json").write_text(json.dumps(config))
    lines = [
        {
            "epoch": e + 1,
            "loss": 3.0 / (e + 1),
            "loss_ce": 2.0 / (e + 1),
            "loss_wmr": 0.8 / (e + 1),
            "loss_mse": 0.2 / (e + 1),
            "lr": 5e-5,
            "train_top1": 50.0 + 10 * e,
            "val_top1": 60.0 + 10 * e,
            "seconds": 2.5,
            "videos_per_s": 1000.0,
        }
        for e in range(epochs)
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    metrics = {"top1": top1, "top5": None if top1 is None else 97.5, "views": "4x3"}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "n_videos": 19_796, "tfm": tfm}))
    for dataset, values in (zeroshot or {}).items():
        splits = [
            {"split": f"test{i + 1}", "top1": v, "top5": 99.0, "n_videos": 3783}
            for i, v in enumerate(values)
        ]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        data = {"dataset": dataset, "splits": splits, "top1_mean": mean, "top1_std": std}
        (folder / f"zeroshot_{dataset}.json").write_text(
            json.dumps({**data, "tfm": tfm, "views": "3x1"})
        )
    return folder


# Spec 10.1 (Table 1) rows: K400 close-set, then UCF / HMDB / K600 (split 1) zero-shot.
TABLE1 = [
    ("baseline", dict(arch="transformer", wmr=False, mse=False), False, 86.7, 82.6, 52.1, 72.8),
    ("experts", dict(wmr=False, mse=False), False, 85.5, 86.6, 56.3, 78.3),
    ("wmr", dict(mse=False), False, 86.8, 87.2, 56.6, 78.3),
    ("mse", dict(), False, 86.8, 87.5, 57.0, 78.9),
]
# Spec 8.4 worked check: L/14, 8 frames, 4x3 views: HM ZS 74.41, trade-off 80.13.
FULL = {"ucf101": [88.3, 89.1, 88.7], "hmdb51": [61.0, 61.8, 61.4], "k600": [78.1, 78.4, 78.7]}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    folders = []
    for name, switches, tfm, k400, ucf, hmdb, k600 in TABLE1:
        zs = {"ucf101": [ucf - 0.3, ucf, ucf + 0.3], "hmdb51": [hmdb], "k600": [k600]}
        folders.append(write_run(tmp_path / name, model_config(**switches), k400, zs, tfm=tfm))
    folders.append(write_run(tmp_path / "full", model_config(), 86.8, FULL))
    folders.append(write_run(tmp_path / "other" / "mse", model_config(experts=6), 86.7))
    return folders


def overview_row(markdown: str, label: str) -> list[str]:
    """Cells of the overview table's row for ``label``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no overview row for {label}")


def test_describe_switches_names_what_differs_from_the_defaults():
    assert describe_switches(model_config()) == "mote N=4"
    assert describe_switches(model_config(wmr=False, mse=False)) == "mote N=4 -wmr -mse"
    assert describe_switches(model_config(mse=False), tfm=False) == "mote N=4 -mse -tfm"
    # the baselines ignore the MoTE switches; meanpool has no temporal module and no TFM
    assert describe_switches(model_config(arch="transformer", wmr=False, mse=False)) == (
        "transformer"
    )
    assert describe_switches(model_config(arch="meanpool"), tfm=False) == "meanpool"
    got = describe_switches(
        model_config(experts=6, routing="uniform", wmr_beta=0.8, tfm_gamma=0.04, layers=4)
    )
    assert got == "mote N=6 L=4 routing=uniform wmr_beta=0.8 tfm_gamma=0.04"
    # WMR settings are irrelevant once WMR is off
    assert describe_switches(model_config(wmr=False, wmr_beta=0.8)) == "mote N=4 -wmr"
    assert describe_switches(model_config(loss_weights=[1, 0.5, 0])) == (
        "mote N=4 loss_weights=1,0.5,0"
    )


def test_report_compares_table1_rows(runs: list[Path], tmp_path: Path):
    out = tmp_path / "report"
    result = report.run(ReportConfig(tuple(runs), out))
    labels = [row["label"] for row in result["runs"]]
    assert labels == ["baseline", "experts", "wmr", "mse", "full", "mse-2"]

    md = Path(result["report"]).read_text()
    for row in result["runs"]:
        assert f"## {row['label']}" in md
        assert f"![training curves of {row['label']}](curves_{row['label']}.png)" in md
    # spec 8.4's worked check, from per-dataset files (no summary file)
    full = overview_row(md, "full")
    assert full[1] == "mote N=4"
    assert full[3:6] == ["4x3", "86.80", "97.50"]  # the views the close-set number fused
    assert full[6:9] == ["88.70 ± 0.33", "61.40 ± 0.33", "78.40 ± 0.24"]
    assert full[9:] == ["74.41", "80.13"]
    assert overview_row(md, "experts")[1] == "mote N=4 -wmr -mse -tfm"
    assert overview_row(md, "baseline")[1] == "transformer -tfm"
    assert overview_row(md, "baseline")[7:9] == ["52.10 (1 split)", "72.80 (1 split)"]
    assert overview_row(md, "mse-2")[6:] == ["n/a"] * 5
    assert "- mse-2: missing zero-shot results" in md

    expected_plots = {out / f"curves_{label}.png" for label in labels}
    expected_plots |= {out / "zeroshot_bars.png", out / "tradeoff.png"}
    assert {Path(p) for p in result["plots"]} == expected_plots
    for plot in expected_plots:
        with Image.open(plot) as image:
            assert image.format == "PNG" and min(image.size) >= 300

    # the scatter, as read back from the drawn figure: one point per run with zero-shot data
    scatter = {point["label"]: (point["x"], point["y"]) for point in result["scatter"]}
    assert len(result["scatter"]) == 5
    assert set(scatter) == {f"{r['label']}: {r['switches']}" for r in result["runs"][:5]}
    x, y = scatter["full: mote N=4"]
    assert (round(x, 2), y) == (74.41, 86.8)
    x, y = scatter["baseline: transformer -tfm"]
    assert x == pytest.approx(3 / (1 / 82.6 + 1 / 52.1 + 1 / 72.8))
    assert y == 86.7


def test_summary_file_wins_and_close_set_only_runs_work(tmp_path: Path):
    imported = write_run(tmp_path / "imported", model_config(), None, FULL)
    (imported / "history.jsonl").unlink()
    summary = {
        "datasets": {"ucf101": 88.7, "hmdb51": 61.4, "k600": 78.4},
        "zs_hm": 74.4,
        "close_set_top1": 86.8,
        "tradeoff": 80.1,
    }
    (imported / "zeroshot_summary.json").write_text(json.dumps(summary))
    result = report.run(ReportConfig((imported,), tmp_path / "out"))
    (row,) = result["runs"]
    assert (row["top1"], row["zs_hm"]) == (86.8, 74.4)
    assert row["tradeoff"] == pytest.approx(2 * 86.8 * 74.4 / (86.8 + 74.4))
    md = Path(result["report"]).read_text()
    assert "No training history" in md
    assert [p["label"] for p in result["scatter"]] == ["imported: mote N=4"]

    plain = write_run(tmp_path / "plain", model_config(arch="meanpool"), 70.2)
    result = report.run(ReportConfig((plain,), tmp_path / "plain-out"))
    assert result["scatter"] == []
    assert [Path(p).name for p in result["plots"]] == ["curves_plain.png"]
    assert not (tmp_path / "plain-out" / "tradeoff.png").exists()
    assert "plain: missing zero-shot results" in Path(result["report"]).read_text()


def test_cli_report_and_errors(runs: list[Path], tmp_path: Path):
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(app, ["report", str(runs[0]), str(runs[4]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report.md" in result.output and "80.13" in result.output
    assert (out / "report.md").is_file() and (out / "tradeoff.png").is_file()

    with pytest.raises(ConfigError, match=f"not a run folder \\(no {CONFIG_FILE}\\)"):
        report.run(ReportConfig((tmp_path,), out))
    with pytest.raises(ConfigError, match="no run folder given"):
        report.run(ReportConfig((), out))
    (runs[4] / "zeroshot_k600.json").write_text('{"dataset": "k600", "splits"')
    with pytest.raises(ConfigError, match="zeroshot_k600.json: not valid JSON"):
        report.run(ReportConfig((runs[4],), out))


def test_one_protocol_dataset_with_the_summary_zeroshot_writes(tmp_path: Path):
    """`mote zeroshot` writes a summary without zs_hm for one dataset; a list dataset is no
    part of HM ZS (spec 8.4), so the scatter's x is the UCF101 mean."""
    folder = write_run(
        tmp_path / "ucf-only", model_config(), 86.8, {"ucf101": [88.3, 89.1], "list": [40.0]}
    )
    summary = zeroshot.summarize(folder)
    assert summary["zs_hm"] is None  # what the zeroshot stage writes for one dataset
    (folder / "zeroshot_summary.json").write_text(json.dumps(summary))
    result = report.run(ReportConfig((folder,), tmp_path / "out"))
    (row,) = result["runs"]
    assert row["hm_datasets"] == ["ucf101"]
    assert row["zs_hm"] == pytest.approx(88.7)
    assert list(row["zeroshot"]) == ["ucf101", "list"]
    assert [(p["x"], p["y"]) for p in result["scatter"]] == [(pytest.approx(88.7), 86.8)]
    md = Path(result["report"]).read_text()
    assert "| HM ZS | 88.70 (over UCF101) |" in md
    assert "| list zero-shot | 40.00 (test1 40.00); 3x1, TFM |" in md
