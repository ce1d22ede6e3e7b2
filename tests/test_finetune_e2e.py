"""`mote finetune-e2e` on real generated motion videos with mote-tiny on the CPU: it learns, the
CLIP lr ratio reaches the visual tower, --resume is exact, undecodable videos are listed,
--init-run/--text-from warm-start, and the run closes the loop (`mote extract --run`, `mote
evaluate`) through the CLI. Several processes under torchrun (gloo), across two launchers, match
one process in tests/test_multinode.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tensorboard_scalars
from safetensors.torch import load_file

from mote.pipeline.clip.build import build_clip
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.train.train_settings import resolve
from mote.pipeline.video.flips import FlipRule, mirror_warning, mirrored_directions
from mote.stages import demo, extract, finetune_e2e, train_temporal
from mote.stages.plain import LineProgress

# Flip-safe classes: spec 7.2 flips clips left-right, so "moving left/right" would swap labels.
CLASSES = tuple(
    f"{shape} {motion}"
    for shape in ("circle", "square")
    for motion in ("moving up", "moving down", "approaching", "receding")
)
COMMON = dict(
    dataset="list",
    model="mote-tiny",
    pretrained="none",
    device="cpu",
    frames=4,
    layers=1,
    workers=0,
    warmup_epochs=1,
    lr=1e-3,
    clip_lr_ratio=1.0,
)
# Learning test (measured, see the test): epochs, temporal lr, CLIP lr ratio, margin over chance.
LEARN_EPOCHS, LEARN_LR, LEARN_RATIO, LEARN_MARGIN = 100, 1e-3, 1.0, 20.0


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """16 motion videos (2 per class) and a list that adds a file of random bytes."""
    root = tmp_path_factory.mktemp("e2e") / "videos"
    data = write_motion_dataset(root, CLASSES, videos_per_class=2, seed=5)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    lines = data.list_file.read_text().splitlines()
    with_corrupt = root / "with_corrupt.txt"
    with_corrupt.write_text("\n".join([*lines[:3], "corrupt.mp4 2", *lines[3:]]) + "\n")
    return data, with_corrupt


def config(videos, out: Path, **overrides) -> finetune_e2e.FinetuneConfig:
    data, _ = videos
    settings = dict(
        COMMON,
        out=out,
        root=data.root,
        list_file=data.list_file,
        labels_file=data.labels_file,
        epochs=2,
        batch_size=8,
        micro_batches=2,
    )
    settings.update(overrides)
    return finetune_e2e.FinetuneConfig(**settings)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def flags(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        name = "--" + {"list_file": "list", "labels_file": "labels"}.get(key, key).replace("_", "-")
        if value is True:
            out.append(name)
        elif value is False:
            out.append("--no-" + name[2:])
        else:
            out += [name, str(value)]
    return out


def cli(mote_cli, *args: object) -> str:
    """``mote ARGS`` through the real entry point in this process (no interpreter to start:
    each costs torch's and open_clip's imports); its stdout."""
    code, out, err = mote_cli(*args)
    assert code == 0, out[-2000:] + err[-3000:]
    return out


def printed_json(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out
    return json.loads(lines[0])


# ------------------------------------------------------------------------------ learning


@pytest.mark.slow
def test_loss_falls_and_the_model_beats_chance_on_motion(tmp_path):
    data = write_motion_dataset(tmp_path / "videos", CLASSES, videos_per_class=8, seed=3)
    train_list, val_list = demo.split_list(data.list_file)
    out = tmp_path / "run"
    metrics = finetune_e2e.run(
        config(
            (data, None),
            out,
            list_file=train_list,
            val_list=val_list,
            epochs=LEARN_EPOCHS,
            warmup_epochs=2,
            batch_size=16,
            micro_batches=1,
            lr=LEARN_LR,
            clip_lr_ratio=LEARN_RATIO,
        )
    )
    lines = history(out)
    first, last = lines[0]["loss_ce"], np.mean([h["loss_ce"] for h in lines[-5:]])
    chance = 100 / len(CLASSES)
    top1, best = metrics["top1"], metrics["best_val_top1"]
    print(f"ce {first:.3f} -> {last:.3f}; top-1 {top1:.1f} (best {best:.1f}, chance {chance:.1f})")
    assert last < first - 0.3
    assert metrics["n_videos"] == 16
    assert metrics["best_val_top1"] >= chance + LEARN_MARGIN


# ------------------------------------------------------------------------------ CLIP lr


def test_clip_weights_move_and_stay_bit_identical_at_ratio_zero(videos, tmp_path):
    original = build_clip("mote-tiny", "none", device="cpu", seed=0).model.visual.state_dict()
    moved = {}
    for ratio in (1.0, 0.0):
        out = tmp_path / f"ratio{ratio:g}"
        finetune_e2e.run(config(videos, out, clip_lr_ratio=ratio, epochs=1, warmup_epochs=0))
        saved = weights(out)
        tower = {k[len("clip.visual.") :]: v for k, v in saved.items() if k.startswith("clip.")}
        assert set(tower) == set(original)
        moved[ratio] = [k for k in tower if not torch.equal(tower[k], original[k])]
    assert len(moved[1.0]) > len(original) // 2
    assert moved[0.0] == []
    config_json = json.loads((tmp_path / "ratio0" / "config.json").read_text())
    assert config_json["source"] == "finetune-e2e" and config_json["clip_weights"] == "tuned"
    # trained end to end: the tuned visual tower counts (report's "M trained")
    assert config_json["params_train"] > config_json["params_visual"] > 0
    assert config_json["train"]["clip_lr_ratio"] == 0.0 and config_json["world_size"] == 1
    assert config_json["precision"] == "fp32"  # auto on the CPU, as train-temporal


def test_spec_defaults_per_width_and_bad_settings(videos, tmp_path):
    cfg = resolve(config(videos, tmp_path / "x", epochs=None, batch_size=None), 768)
    assert (cfg.epochs, cfg.batch_size, cfg.clip_lr_ratio) == (20, 144, 1.0)
    cfg = config(videos, tmp_path / "x", epochs=None, batch_size=None, clip_lr_ratio=None)
    assert (resolve(cfg, 512).clip_lr_ratio) == 0.07
    with pytest.raises(ConfigError, match="--val-list"):
        finetune_e2e.run(config(videos, tmp_path / "y", val_split="test1"))
    with pytest.raises(ConfigError, match="--micro-batches must be >= 1, got 0"):
        finetune_e2e.run(config(videos, tmp_path / "z", micro_batches=0))
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_a_small_list_gets_train_temporal_s_small_store_settings_and_says_so(videos, tmp_path):
    """No --epochs, --batch-size or --lr on 16 videos (1 step per epoch at the spec's batch
    192): batch 8, 500 epochs (1,000 steps), lr 5e-4, the rule and line of train-temporal,
    printed once and recorded; not the "too few to learn" warning. One epoch is run."""
    lines: list[str] = []
    settings = dict(epochs=None, batch_size=None, lr=None, stop_after_epochs=1)
    result = finetune_e2e.run(
        config(videos, tmp_path / "r", **settings), LineProgress(write=lines.append)
    )
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["train"]["batch_size"], saved["train"]["epochs"], saved["train"]["lr"]) == (
        8,
        500,
        5e-4,
    )
    note = (
        "small training list: 16 videos are 1 steps per epoch at the spec's batch 192, so "
        "training with batch 8, 500 epochs, lr 0.0005 (1000 steps in all) instead of the "
        "spec's batch 192, 30 epochs, lr 5e-05; --batch-size, --epochs and --lr choose them"
    )
    assert saved["chosen_for_you"] == [note] and lines.count(note) == 1
    assert result["warnings"] == saved["warnings"] == []
    assert not any("too few to learn" in line for line in lines)


def test_keeping_labels_on_a_flip_of_left_right_classes_warns_with_the_way_out(tmp_path):
    """``--flip keep`` mirrors "moving left" clips into right-moving ones under the same label:
    one warning names those classes and --flip off / pairs; a rule that swaps them or flips
    off says nothing."""
    classes = ("circle moving left", "circle moving right", "circle moving up")
    data = write_motion_dataset(tmp_path / "videos", classes, videos_per_class=2, seed=1)
    lines: list[str] = []
    out = tmp_path / "keep"
    files = dict(root=data.root, list_file=data.list_file, labels_file=data.labels_file)
    cfg = finetune_e2e.FinetuneConfig(
        **COMMON, **files, out=out, epochs=1, batch_size=6, micro_batches=1, flip="keep"
    )
    result = finetune_e2e.run(cfg, LineProgress(write=lines.append))
    warning = (
        "--flip keep: training clips are mirrored left-right at random and keep their labels, "
        "but 2 classes name a direction ('circle moving left', 'circle moving right'), and a "
        "mirrored clip of one shows the opposite direction; pass --flip off (never flip) or "
        "--flip A:B,C:D (class indices of mirror pairs, swapped on a flip)"
    )
    assert warning in result["warnings"] and lines.count(warning) == 1
    assert warning in json.loads((out / "config.json").read_text())["warnings"]
    assert mirror_warning(FlipRule.parse("0:1"), classes) is None
    assert mirror_warning(FlipRule.parse("off"), classes) is None
    assert mirrored_directions(FlipRule.parse("0:2"), classes) == ["circle moving right"]
    assert mirrored_directions(FlipRule(), ("Turning leftwards", "archery", "bright")) == [
        "Turning leftwards"
    ]


# ------------------------------------------------------------------------------ resume


def test_resume_ends_with_the_uninterrupted_weights(videos, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    settings = dict(epochs=3, val_list=videos[0].list_file, val_limit=8)
    finetune_e2e.run(config(videos, whole, **settings))
    stopped = finetune_e2e.run(config(videos, part, stop_after_epochs=1, **settings))
    assert stopped["stopped_after_epoch"] == 1
    finetune_e2e.run(config(videos, part, resume=True, **settings))
    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and any(k.startswith("clip.visual.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in history(part)] == [1, 2, 3]
    assert [h["loss"] for h in history(part)] == [h["loss"] for h in history(whole)]


# ------------------------------------------------------------------------------ warm start


def test_init_run_and_text_from_warm_start_from_the_cache(videos, tmp_path, tiny_extract):
    data, _ = videos
    store = tmp_path / "train.zarr"
    extract.run(tiny_extract(data, store, frames=4))
    cached = tmp_path / "cached"
    train_temporal.run(
        train_temporal.TrainConfig(
            train=store, out=cached, layers=1, epochs=2, batch_size=8, lr=1e-3, device="cpu"
        )
    )
    head = weights(cached)
    out = tmp_path / "warm"
    # an lr so small that one epoch leaves the loaded head where it was (to 1e-9); no --model:
    # the CLIP is the one the --init-run records
    warm = config(videos, out, epochs=1, lr=1e-12, init_run=cached, text_from=store)
    finetune_e2e.run(replace(warm, model=None, pretrained=None))
    tuned = weights(out)
    bank = torch.nn.functional.normalize(torch.from_numpy(np.array(_text(store))).float(), dim=-1)
    torch.testing.assert_close(tuned["finetune_text"], bank, rtol=0, atol=1e-6)
    for key, value in head.items():
        if key != "finetune_text":
            torch.testing.assert_close(tuned[key], value, rtol=0, atol=1e-9, msg=key)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["train"]["model"], saved["train"]["pretrained"]) == ("mote-tiny", "none")
    assert saved["init_run"]["run"] == str(cached)
    assert saved["text"] == str(store.resolve()) or saved["text"] == str(store)
    # a head of another shape is refused before anything is written
    with pytest.raises(ConfigError, match="does not fit"):
        finetune_e2e.run(config(videos, tmp_path / "bad", layers=2, init_run=cached))
    assert not (tmp_path / "bad").exists()


def _text(store: Path):
    from mote.cache_schema.feature_store import FeatureStore

    return FeatureStore.open(store).text_embeddings


# ------------------------------------------------------------------------------ CLI, failures


def test_cli_run_skips_a_corrupt_video_then_reextracts_and_evaluates(videos, tmp_path, mote_cli):
    data, with_corrupt = videos
    run = tmp_path / "run"
    settings = {**COMMON, "root": data.root, "list_file": with_corrupt}
    settings.update(labels_file=data.labels_file, out=run, epochs=1, batch_size=8)
    settings.update(micro_batches=1, val_list=with_corrupt, log="tensorboard")
    metrics = printed_json(cli(mote_cli, "finetune-e2e", "--json", *flags(settings)))
    assert metrics["failed_videos"] == 1 and metrics["n_videos"] == 16
    assert metrics["n_failed_skipped"] == 1
    listed = RunFolder(run).read_failures()
    assert {(row["split"], row["video"]) for row in listed} == {
        ("train", "corrupt.mp4"),
        ("val", "corrupt.mp4"),
    }
    assert all(row["reason"] for row in listed)
    assert history(run)[0]["videos"] == 16  # the other videos of its batch still trained
    confusion = RunFolder(run).read_confusion()  # of the final 1-view validation
    counts = np.array(confusion["counts"])
    assert counts.sum() == 16 and confusion["views"] == "1x1"
    assert 100 * np.trace(counts) / 16 == pytest.approx(metrics["top1"])
    logged = tensorboard_scalars(run)  # --log tensorboard: the history's numbers, per epoch
    for tag, key in (("loss/total", "loss"), ("train/lr", "lr"), ("val/top1_1view", "val_top1")):
        assert logged[tag] == [(1, float(np.float32(history(run)[0][key])))], tag

    store = tmp_path / "tuned.zarr"
    cli(
        mote_cli, "extract", "--dataset", "list", "--root", data.root, "--list", data.list_file,
        "--labels", data.labels_file, "--device", "cpu", "--decode-workers", "0",
        "--frames", "4", "--run", run, "--out", store,
    )  # fmt: skip
    result = printed_json(
        cli(mote_cli, "evaluate", "--run", run, "--store", store, "--device", "cpu", "--json")
    )
    assert result["n_videos"] == 16 and result["same_classes_as_training"] is True
    report = printed_json(cli(mote_cli, "report", run, "--out", tmp_path / "report", "--json"))
    assert report["runs"][0]["source"] == "finetune-e2e"
    assert str(tmp_path / "report" / "confusion_run.png") in report["plots"]


def test_decode_workers_default_to_the_cores_of_a_process_s_share_of_its_node():
    assert finetune_e2e.default_workers({}, cores=4) == 4
    assert finetune_e2e.default_workers({}, cores=64) == finetune_e2e.MAX_WORKERS
    # torchrun's processes of one node split its cores, whatever the number of nodes
    assert finetune_e2e.default_workers({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "8"}, 16) == 8
    assert finetune_e2e.default_workers({"LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "16"}, 16) == 2
    assert finetune_e2e.default_workers({"LOCAL_WORLD_SIZE": "4"}, cores=2) == 1


def test_help_names_the_torchrun_launch_line():
    from typer.testing import CliRunner

    from mote.stages.cli import app

    shown = CliRunner().invoke(app, ["finetune-e2e", "--help"], env={"COLUMNS": "200"}).output
    assert "torchrun --nproc-per-node N -m mote.stages finetune-e2e" in " ".join(shown.split())
    assert "--grad-checkpointing" in shown and "--no-grad-checkpointing" in shown
