"""Run folders: the one API that knows their files, refused `--out`s, exact history after a kill,
resume by resolved path, one-line errors for damaged or unwritable run files, few-step warning,
gradient-free validation. Stores are real zarr stores of random features (no extraction)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import held_by_another_process, random_store
from safetensors.torch import load_file

from mote.cache_schema.claim import CLAIM_FILE, ClaimOwner
from mote.cache_schema.store_errors import StoreError
from mote.pipeline.errors import ConfigError, OutputError, RunFileError
from mote.pipeline.runs.run_config import RUN_CONFIG_VERSION, RunClip, RunConfig
from mote.pipeline.runs.run_folder import RunFolder, load_run
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.train.train_settings import capped_warmup, small_store_settings
from mote.stages import train_temporal

D = 64
CLASSES = ("a", "b", "c", "d")


def make_store(path: Path, videos: int = 32, views: tuple[int, int] = (1, 1), seed: int = 0):
    """A real store of random mote-tiny-sized features, every video done."""
    ids = [f"v{i}" for i in range(videos)]
    labels = [i % len(CLASSES) for i in range(videos)]
    random_store(path, ids, labels, CLASSES, dim=D, views=views, seed=seed)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("runfolder")
    return make_store(work / "train.zarr"), make_store(work / "val.zarr", 16, (3, 1), seed=1)


def config(stores, out, **overrides) -> train_temporal.TrainConfig:
    train, val = stores
    settings = dict(
        train=train,
        val=val,
        out=out,
        layers=1,
        epochs=3,
        warmup_epochs=1,
        batch_size=8,
        micro_batches=1,
        lr=1e-3,
        clip_lr_ratio=1.0,
        device="cpu",
    )
    settings.update(overrides)
    return train_temporal.TrainConfig(**settings)


def history_epochs(folder: RunFolder) -> list[int]:
    """Epoch numbers of every line of the history file, read strictly (no tolerant reader)."""
    return [json.loads(line)["epoch"] for line in folder.history_file.read_text().splitlines()]


class Killed(BaseException):
    """What a SIGKILL between an epoch's history line and its checkpoint looks like in-process."""


# ------------------------------------------------------------------------------ the API


def test_history_reader_skips_torn_lines_and_keep_history_dedupes(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    for epoch in (1, 2, 2, 3):
        folder.append_history({"epoch": epoch, "loss": float(epoch)})
    with folder.history_file.open("a") as handle:
        handle.write('{"epoch": 4, "lo')  # a line cut short by a kill
    assert [r["epoch"] for r in folder.read_history()] == [1, 2, 2, 3]
    folder.keep_history(2)
    assert history_epochs(folder) == [1, 2]
    folder.keep_history(0)
    assert folder.read_history() == []


def test_zeroshot_results_and_summaries_round_trip(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_zeroshot("ucf101", {"dataset": "ucf101", "top1_mean": 70.0})
    folder.write_zeroshot_summary({"zs_hm": None})
    folder.write_metrics({"top1": 80.0})
    assert [name for name, _, _ in folder.zeroshot_results()] == ["ucf101"]
    assert folder.read_zeroshot("ucf101")["top1_mean"] == 70.0
    assert folder.read_zeroshot("hmdb51") is None
    assert folder.read_metrics() == {"top1": 80.0} and folder.is_finished()
    folder.zeroshot_file("k600").write_text('{"dataset": "k6')
    with pytest.raises(RunFileError, match="not valid JSON.*rerun `mote zeroshot`"):
        folder.zeroshot_results()


# ------------------------------------------------------------------------------ --out


def test_out_into_a_foreign_folder_or_a_file_is_refused(stores, tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "history.jsonl").write_text("my own log, not JSON\n")
    with pytest.raises(ConfigError, match="holds other files and no mote run"):
        train_temporal.run(config(stores, foreign, epochs=1))
    with pytest.raises(ConfigError, match="holds other files and no mote run"):
        train_temporal.run(config(stores, foreign, epochs=1, resume=True))
    assert sorted(p.name for p in foreign.iterdir()) == ["history.jsonl"]
    assert (foreign / "history.jsonl").read_text() == "my own log, not JSON\n"
    a_file = tmp_path / "run.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train_temporal.run(config(stores, a_file, epochs=1))
    empty = tmp_path / "empty"
    empty.mkdir()
    train_temporal.run(config(stores, empty, epochs=1))  # an empty folder is fine
    assert RunFolder(empty).is_finished()


def test_out_that_is_a_file_is_one_line_on_the_cli(stores, tmp_path):
    a_file = tmp_path / "run.txt"
    a_file.write_text("x")
    result = mote_cli(
        "train-temporal", "--train", str(stores[0]), "--out", str(a_file), "--device", "cpu"
    )
    assert_one_line_error(result, str(a_file), "is a file")


# ------------------------------------------------------------------------------ resume


def test_a_kill_between_history_and_checkpoint_never_duplicates_an_epoch(
    stores, tmp_path, monkeypatch
):
    whole = RunFolder(tmp_path / "whole")
    train_temporal.run(config(stores, whole.path))
    folder = RunFolder(tmp_path / "killed")

    def kill(*args, **kwargs):
        raise Killed

    for stop_after in (None, 1):  # killed in epoch 1 (no checkpoint yet), then in epoch 2
        real = train_temporal.save_checkpoint
        if stop_after is not None:
            train_temporal.run(config(stores, folder.path, resume=True, stop_after_epochs=1))
        monkeypatch.setattr(train_temporal, "save_checkpoint", kill)
        with pytest.raises(Killed):
            train_temporal.run(config(stores, folder.path, resume=True))
        monkeypatch.setattr(train_temporal, "save_checkpoint", real)
    # what the second kill left: epochs 1 and 2 in the history, the checkpoint at epoch 1
    assert history_epochs(folder) == [1, 2]
    train_temporal.run(config(stores, folder.path, resume=True))
    assert history_epochs(folder) == [1, 2, 3]
    a, b = load_file(whole.model_file), load_file(folder.model_file)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_matches_runs_by_resolved_path(stores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = stores
    relative = Path("runs") / "x"
    stopped = train_temporal.run(config(stores, relative, epochs=2, stop_after_epochs=1))
    assert stopped["stopped_after_epoch"] == 1
    saved = RunFolder(relative).read_config().train
    assert saved["out"] == str(tmp_path.resolve() / "runs" / "x")
    # the same run, spelled absolute, through a symlinked store path
    link = tmp_path / "train-link.zarr"
    link.symlink_to(train)
    result = train_temporal.run(config((link, val), tmp_path / "runs" / "x", epochs=2, resume=True))
    assert result["epochs"] == 2 and history_epochs(RunFolder(relative)) == [1, 2]
    with pytest.raises(ConfigError, match="cannot resume with other settings"):
        train_temporal.run(config(stores, relative, epochs=2, weight_decay=0.1, resume=True))


# ------------------------------------------------------------------------------ warnings


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def start(self, total, label, unit="videos") -> None:
        pass

    def update(self, *, done=0, failed=0, frames=0) -> None:
        pass

    def message(self, text: str) -> None:
        self.messages.append(text)

    def finish(self) -> None:
        pass


def test_too_few_steps_in_all_are_reported_with_the_fix(stores, tmp_path):
    """The warning counts the whole run's steps, so raising --epochs silences it."""
    progress = Recorder()
    result = train_temporal.run(config(stores, tmp_path / "few", epochs=2), progress)
    expected = (
        "32 videos at batch 8 for 2 epochs are 8 optimiser steps in all, too few to learn: "
        "raise --epochs to 75 or lower --batch-size"
    )
    assert expected in progress.messages
    assert result["warnings"] == [expected]
    saved = RunFolder(tmp_path / "few").read_config()
    assert saved.details["warnings"] == [expected] and saved.details["steps_per_epoch"] == 4
    assert train_temporal.few_steps_warnings(32, 8, 75) == []
    assert train_temporal.few_steps_warnings(160, 192, 30) == [
        "160 videos at batch 192 for 30 epochs are 30 optimiser steps in all, too few to learn: "
        "raise --epochs to 300 or lower --batch-size"
    ]


def test_a_small_store_gets_settings_that_learn_and_says_so(stores, tmp_path):
    """No training flag on a 32-video store: batch 8, 250 epochs (1,000 steps), lr 5e-4, in one
    line printed and recorded; a flag the user gives wins; the spec's size keeps the spec."""
    cfg = train_temporal.TrainConfig(train=stores[0], out=tmp_path / "r")
    chosen, note = small_store_settings(cfg, 32, 512)
    assert (chosen.batch_size, chosen.epochs, chosen.lr) == (8, 250, 5e-4)
    assert note.startswith("small store: 32 videos are 1 steps per epoch at the spec's batch 192")
    assert "batch 8, 250 epochs, lr 0.0005 (1000 steps in all)" in note
    given = replace(cfg, epochs=40)
    chosen, note = small_store_settings(given, 32, 512)
    assert (chosen.batch_size, chosen.epochs, chosen.lr) == (
        8,
        40,
        5e-4,
    ) and "40 epochs" not in note
    assert small_store_settings(cfg, 240_000, 512) == (cfg, None)
    assert small_store_settings(replace(cfg, batch_size=8, epochs=3, lr=1e-3), 32, 512)[1] is None
    progress = Recorder()
    train_temporal.run(
        train_temporal.TrainConfig(
            train=stores[0],
            out=tmp_path / "run",
            layers=1,
            micro_batches=1,
            device="cpu",
            epochs=2,
        ),  # fmt: skip
        progress,
    )
    saved = RunFolder(tmp_path / "run").read_config()
    assert saved.train["batch_size"] == 8 and saved.train["lr"] == 5e-4
    assert any(m.startswith("small store: 32 videos") for m in progress.messages)
    assert saved.details["chosen_for_you"][0].startswith("small store: 32 videos")


def test_the_warm_up_is_at_most_a_fifth_of_the_epochs():
    cfg = train_temporal.TrainConfig(train=Path("s"), out=Path("r"), epochs=2, warmup_epochs=5)
    capped, note = capped_warmup(cfg)
    assert capped.warmup_epochs == 0.4
    assert note == "--warmup-epochs 5 is more than a fifth of the 2 epochs: warming up for 0.4"
    assert capped_warmup(replace(cfg, epochs=30)) == (replace(cfg, epochs=30), None)


# ------------------------------------------------------------------------------ validation


@dataclass
class Features:
    embeddings: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def test_per_epoch_validation_builds_no_autograd_graph():
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=1))
    text = torch.nn.functional.normalize(torch.randn(len(CLASSES), D), dim=-1)
    rng = np.random.default_rng(0)
    features = Features(
        rng.standard_normal((20, 3, 8, D)).astype(np.float16), np.arange(20) % len(CLASSES)
    )
    seen: list[bool] = []
    outputs: list[bool] = []

    def hook(module, inputs, output):
        seen.append(torch.is_grad_enabled())
        if isinstance(output, torch.Tensor):
            outputs.append(output.requires_grad)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    top1 = train_temporal._val_top1(model, features, text, "cpu", view=2)
    for handle in handles:
        handle.remove()
    assert 0.0 <= top1 <= 100.0
    assert seen and not any(seen), "validation ran with gradients enabled"
    assert outputs and not any(outputs)
    assert torch.is_grad_enabled()  # and it leaves the caller's mode alone


# ------------------------------------------------------------------------------ one-line faults


def mote_cli(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MOTE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mote.stages", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=preexec_fn,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def small_run(tmp_path) -> RunFolder:
    """A run folder as import-reference leaves it, for the store of ``make_store``."""
    folder = RunFolder(tmp_path / "run")
    folder.create()
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=1))
    model.set_finetune_text(torch.randn(len(CLASSES), D))
    folder.save_model(model)
    folder.write_config(
        RunConfig("import-reference", clip=RunClip("mote-tiny", None, "random:seed=0", D))
    )
    return folder


def test_damaged_model_and_config_files_are_one_line_each(small_run, tmp_path):
    store = tmp_path / "absent.zarr"  # the run is read first; the store is never reached
    good = small_run.model_file.read_bytes()
    for damaged in (good[: len(good) // 2], b""):  # cut short, empty
        small_run.model_file.write_bytes(damaged)
        result = mote_cli("evaluate", "--run", str(small_run.path), "--store", str(store))
        assert_one_line_error(result, str(small_run.model_file), "retrain", "re-import")
    small_run.model_file.write_bytes(good)
    small_run.config_file.write_text('{"arch": "mote", "clip": {"mod')
    result = mote_cli("evaluate", "--run", str(small_run.path), "--store", str(store))
    assert_one_line_error(result, str(small_run.config_file), "not valid JSON", "retrain")
    with pytest.raises(RunFileError):
        load_run(small_run.path)


def _without_dac_override() -> None:
    """Root ignores file modes; drop that power (CAP_DAC_OVERRIDE) in the child process."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_read_only_run_folder_is_one_line(small_run, tmp_path):
    store = make_store(tmp_path / "test.zarr", 8, (3, 1))
    target = small_run.path / "predictions.npz"
    small_run.path.chmod(0o555)
    try:
        result = mote_cli(
            "evaluate",
            "--run",
            str(small_run.path),
            "--store",
            str(store),
            "--device",
            "cpu",
            "--save-predictions",
            str(target),
            preexec_fn=_without_dac_override,
        )
    finally:
        small_run.path.chmod(0o755)
    assert_one_line_error(result, str(target), "cannot write", "permission denied")
    assert not target.exists()
    # the same folder, writable again, takes the predictions
    result = mote_cli(
        "evaluate", "--run", str(small_run.path), "--store", str(store), "--device", "cpu",
        "--save-predictions", str(target),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert target.is_file()


def test_write_errors_name_the_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    folder = RunFolder(blocker / "run")
    with pytest.raises(OutputError, match=f"{blocker / 'run'}: cannot write"):
        folder.create()
    with pytest.raises(OutputError, match="cannot write"):
        RunFolder(blocker).write_metrics({"top1": 1.0})


# ------------------------------------------------------------------------------ config.json


def test_a_run_saved_before_a_switch_existed_resumes_with_its_default(stores, tmp_path):
    """A run whose config.json lacks a setting (written before the switch was added) resumes
    when the setting is at its default, and is refused naming it otherwise."""
    out = tmp_path / "old"
    train_temporal.run(config(stores, out, epochs=2, stop_after_epochs=1))
    older = {"wmr_loss", "tfm_k", "device_memory_gb"}

    def forget_switches() -> None:
        data = json.loads((out / "config.json").read_text())
        for key in older:
            del data["train"][key]
            data["model_config"].pop(key, None)
        del data["config_version"]
        (out / "config.json").write_text(json.dumps(data))

    forget_switches()
    folder = RunFolder(out)
    assert folder.read_config().model.wmr_loss == default_config(D).wmr_loss
    with pytest.raises(ConfigError, match="wmr_loss: 'mse' now|wmr_loss: 'ce' in the run"):
        train_temporal.run(config(stores, out, epochs=2, wmr_loss="mse", resume=True))
    result = train_temporal.run(config(stores, out, epochs=2, resume=True))
    assert result["epochs"] == 2 and history_epochs(folder) == [1, 2]
    assert folder.read_config().version == RUN_CONFIG_VERSION  # rewritten in today's layout


def test_run_config_round_trips_and_refuses_a_newer_layout(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    written = RunConfig(
        "finetune-e2e",
        model=default_config(D, layers=1, wmr=False),
        clip=RunClip("mote-tiny", "none", "random:seed=0", D),
        classes=tuple(CLASSES),
        train={"lr": 0.001},
        train_sampling={"frames": 8},
        params_merged=10,
        params_train=20,
        details={"device": "cpu", "warnings": ["w"]},
    )
    folder.write_config(written)
    assert folder.read_config() == written
    assert folder.read_config().train_frames == 8 and folder.read_config().arch == "mote"
    data = json.loads(folder.config_file.read_text())
    assert data["arch"] == "mote" and data["device"] == "cpu"  # flat, readable without mote
    with pytest.raises(ConfigError, match="would overwrite recorded fields"):
        RunConfig("train-temporal", details={"classes": []}).to_json()
    folder.config_file.write_text(json.dumps({**data, "config_version": RUN_CONFIG_VERSION + 1}))
    with pytest.raises(ConfigError, match="newer than this mote reads"):
        folder.read_config()


def test_a_moved_run_resumes_where_it_is_and_resume_of_nothing_says_so(stores, tmp_path):
    first = tmp_path / "first"
    train_temporal.run(config(stores, first, epochs=2, stop_after_epochs=1))
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    result = train_temporal.run(config(stores, moved, epochs=2, resume=True))
    assert result["epochs"] == 2 and history_epochs(RunFolder(moved)) == [1, 2]
    progress = Recorder()  # a job script that always passes --resume: its first launch
    train_temporal.run(config(stores, tmp_path / "new", epochs=1, resume=True), progress)
    assert any("no run in" in m and "starting a new one" in m for m in progress.messages)


def test_a_failed_weights_write_is_one_line_and_keeps_the_last_file(tmp_path):
    """safetensors' own I/O error becomes the errno table's line. A real write limit: the
    process may write files of at most 64 kB (RLIMIT_FSIZE), so the second save, of a bigger
    model, fails in the kernel with EFBIG."""
    script = f"""
import resource, signal, sys, torch
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.errors import OutputError
folder = RunFolder({str(tmp_path / "run")!r})
folder.create()
folder.save_model(MoTE(default_config(8, layers=1)))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    folder.save_model(MoTE(default_config(64, layers=2)))
except OutputError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    model_file = tmp_path / "run" / "model.safetensors"
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith(f"{model_file}: cannot write") and "\n" not in message
    assert "ulimit -f" in message, message
    assert load_file(str(model_file))["logit_scale"].shape == ()  # the first model, whole
    assert sorted(p.name for p in model_file.parent.iterdir()) == ["model.safetensors"]


def test_one_writer_per_run_folder(stores, tmp_path):
    """A second train-temporal (or a --resume) on a run another live process writes is
    refused naming it; a claim whose process is gone is taken over with a notice."""
    out = tmp_path / "run"
    train_temporal.run(config(stores, out, epochs=2, stop_after_epochs=1))
    with held_by_another_process(out) as pid:
        for resume in (True, False):
            with pytest.raises(StoreError, match=rf"pid {pid}.* is writing this run"):
                train_temporal.run(config(stores, out, epochs=2, resume=resume))
        assert history_epochs(RunFolder(out)) == [1]  # nothing was written
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    record = json.loads(ClaimOwner.me().to_json()) | {"pid": int(gone), "process_start": 1}
    (out / CLAIM_FILE).write_text(json.dumps(record))
    progress = Recorder()
    result = train_temporal.run(config(stores, out, epochs=2, resume=True), progress)
    assert result["epochs"] == 2 and history_epochs(RunFolder(out)) == [1, 2]
    assert any("taking over the claim of a run that is gone" in m for m in progress.messages)
    assert not (out / CLAIM_FILE).exists()  # released at the end


def test_readers_warn_when_another_process_writes_the_run(stores, tmp_path):
    """evaluate and report never take the run's claim but say, in one 'warning:' line, that a
    live process is writing the run; without a writer they print no warning."""
    out = tmp_path / "run"
    train_temporal.run(config(stores, out, epochs=1))
    evaluate = [sys.executable, "-m", "mote.stages", "evaluate", "--run", str(out), "--store",
                str(stores[1]), "--device", "cpu"]  # fmt: skip
    report = [sys.executable, "-m", "mote.stages", "report", str(out), "--out",
              str(tmp_path / "report")]  # fmt: skip
    quiet = subprocess.run(evaluate, capture_output=True, text=True)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    with held_by_another_process(out) as pid:
        for command in (evaluate, report):
            done = subprocess.run(command, capture_output=True, text=True)
            warned = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
            assert done.returncode == 0, done.stderr
            assert len(warned) == 1 and f"pid {pid}" in warned[0], done.stderr
            assert "may change" in warned[0]
        assert (out / CLAIM_FILE).exists()  # the readers left the writer's claim alone


def test_sigterm_releases_the_run_claim_and_the_run_resumes(stores, tmp_path):
    """A scheduler's SIGTERM unwinds like Ctrl-C: exit 143, the claim released (no takeover
    notice on resume), the last finished epoch kept."""
    train, _ = stores
    out = tmp_path / "run"
    args = ["train-temporal", "--train", str(train), "--out", str(out), "--layers", "1"]
    args += ["--epochs", "400", "--batch-size", "8", "--micro-batches", "1", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "mote.stages", *args], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if RunFolder(out).history_file.is_file() and (out / CLAIM_FILE).is_file():
            break  # claimed and an epoch is done
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before the signal"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143 and "terminated" in err, err
    assert not (out / CLAIM_FILE).exists()
    progress = Recorder()
    same = train_temporal.TrainConfig(
        train=train, out=out, layers=1, epochs=400, batch_size=8, micro_batches=1,
        device="cpu", resume=True, stop_after_epochs=1,
    )  # fmt: skip
    train_temporal.run(same, progress)
    assert not any("taking over" in m for m in progress.messages)
