"""The thread policy (pipeline/threads.py): the count it picks, and that every command runs under
it and gives its caller's count back. No timings here: speed is bench/threads.py's."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from helpers import random_store

from mote.pipeline import threads
from mote.pipeline.threads import (
    SMALL_WIDTH,
    command_threads,
    policy_threads,
    use_threads,
    use_worker_threads,
)
from mote.pipeline.train.loop import Trainer
from mote.stages import evaluate, extract, train_temporal

CALLER = 3  # the caller's torch count: no policy rule gives 3 in these tests
WIDE = SMALL_WIDTH + 64  # the narrowest width that gets more than one thread (heads of 64)
CLASSES = ("a", "b", "c", "d")


@pytest.fixture
def caller_threads(monkeypatch):
    """No OMP_NUM_THREADS or torchrun here; the caller runs CALLER torch threads."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield CALLER
    torch.set_num_threads(before)


@pytest.fixture
def thread_calls(monkeypatch, caller_threads) -> list[int]:
    """Every torch.set_num_threads count, in order, with 7 usable cores."""
    calls: list[int] = []
    real = torch.set_num_threads

    def record(count: int) -> None:
        calls.append(count)
        real(count)

    monkeypatch.setattr(torch, "set_num_threads", record)
    monkeypatch.setattr(threads, "usable_cores", lambda: 7)
    return calls


# ------------------------------------------------------------------------------ the policy


@pytest.mark.parametrize("width", [None, 64, 512])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_omp_num_threads_the_user_set_decides(width, device):
    env = {"OMP_NUM_THREADS": "5", "LOCAL_WORLD_SIZE": "4"}
    assert policy_threads(device, width=width, workers=2, env=env, cores=16) is None


def test_use_threads_leaves_torch_alone_under_omp_num_threads(caller_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert use_threads("cpu", width=64) == CALLER
    assert use_worker_threads() == CALLER
    with command_threads("cpu", width=512) as inside:
        assert inside == CALLER
    assert torch.get_num_threads() == CALLER


def test_torchrun_processes_share_the_cores():
    def share(processes: str, cores: int, workers: int = 0) -> int | None:
        env = {"LOCAL_WORLD_SIZE": processes}
        return policy_threads("cpu", width=512, workers=workers, env=env, cores=cores)

    assert share("1", 16) == 16
    assert share("4", 16) == 4
    assert share("3", 16) == 5  # never more than cores: 3 x 5 <= 16
    assert share("4", 16, workers=2) == 2
    assert share("8", 2) == 1  # more processes than cores: at least one thread
    assert share("not a number", 16) == 16


def test_small_models_on_the_cpu_get_one_thread():
    env: dict[str, str] = {}
    assert policy_threads("cpu", width=64, env=env, cores=16) == 1
    assert policy_threads("cpu", width=SMALL_WIDTH, env=env, cores=16) == 1
    assert policy_threads("cpu", width=WIDE, env=env, cores=16) == 16
    assert policy_threads("cpu", width=768, env=env, cores=16) == 16
    # on a GPU the host threads feed the device: the model's size does not matter
    assert policy_threads(torch.device("cuda"), width=64, env=env, cores=16) == 16
    assert policy_threads("cpu", width=None, env=env, cores=16) == 16  # width not known yet


def test_decode_workers_take_their_cores():
    env: dict[str, str] = {}
    assert policy_threads("cpu", width=512, workers=6, env=env, cores=16) == 10
    assert policy_threads("cpu", width=512, workers=16, env=env, cores=16) == 1
    assert policy_threads("cuda", width=512, workers=12, env=env, cores=16) == 4


def test_a_worker_process_runs_one_thread(caller_threads):
    assert use_worker_threads() == 1


def test_command_threads_gives_the_callers_count_back(caller_threads):
    with command_threads() as inside:
        assert inside == torch.get_num_threads() == threads.usable_cores()
        assert use_threads("cpu", width=64) == torch.get_num_threads() == 1
    assert torch.get_num_threads() == CALLER
    with pytest.raises(RuntimeError), command_threads("cpu", width=64):
        assert torch.get_num_threads() == 1
        raise RuntimeError("a command failed")
    assert torch.get_num_threads() == CALLER


# ------------------------------------------------------------------------------ the commands

MISSING = Path("missing")
FAILING_COMMANDS = {  # each fails on a missing input, after entering the policy
    "extract": ("ExtractConfig", dict(dataset="list", out=MISSING / "store.zarr")),
    "train_temporal": ("TrainConfig", dict(train=MISSING / "store.zarr", out=MISSING / "run")),
    "finetune_e2e": ("FinetuneConfig", dict(dataset="list", out=MISSING / "run")),
    "evaluate": ("EvaluateConfig", dict(run=MISSING / "run", store=MISSING / "store.zarr")),
    "zeroshot": ("ZeroShotConfig", dict(run=MISSING, dataset="ucf101", stores=(MISSING,))),
    "fewshot": ("FewShotConfig", dict(train=MISSING, test=MISSING, out=MISSING / "runs")),
    "predict": ("PredictConfig", dict(run=MISSING, videos=(MISSING,), decode_workers=0)),
    "import_reference": ("ImportReferenceConfig", dict(ckpt=MISSING, out=MISSING / "run")),
    "demo": ("DemoConfig", dict(workdir=MISSING)),
}


@pytest.mark.parametrize("command", sorted(FAILING_COMMANDS))
def test_every_command_runs_under_the_policy_and_restores_the_count(
    command, thread_calls, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "missing").write_text("a file where the command expects a folder\n")
    module = importlib.import_module(f"mote.stages.{command}")
    name, settings = FAILING_COMMANDS[command]
    with pytest.raises(Exception):  # noqa: B017, PT011 (each command fails its own way)
        module.run(getattr(module, name)(**settings))
    assert thread_calls[0] == 7  # entered the policy: every usable core, width not known yet
    assert thread_calls[-1] == torch.get_num_threads() == CALLER


def threads_seen_by(monkeypatch, owner: object, name: str) -> list[int]:
    """Wrap ``owner.name``; the list gets the torch thread count at each of its calls."""
    seen: list[int] = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen


def _store(path: Path, dim: int) -> Path:
    ids = [f"v{i}.mp4" for i in range(16)]
    random_store(path, ids, [i % len(CLASSES) for i in range(16)], CLASSES, dim=dim)
    return path


def _train(store: Path, out: Path) -> dict:
    return train_temporal.run(
        train_temporal.TrainConfig(
            train=store, out=out, layers=1, epochs=2, warmup_epochs=1, batch_size=8,
            micro_batches=1, device="cpu", tfm=False,
        )
    )  # fmt: skip


@pytest.mark.parametrize(("dim", "expected"), [(64, 1), (WIDE, 2)])
def test_train_temporal_epochs_run_under_the_policy(
    dim, expected, caller_threads, tmp_path, monkeypatch
):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    seen = threads_seen_by(monkeypatch, Trainer, "train_epoch")
    _train(_store(tmp_path / "store.zarr", dim), tmp_path / "run")
    assert seen == [expected, expected]
    assert torch.get_num_threads() == CALLER


def test_evaluate_scores_under_the_policy(caller_threads, tmp_path, monkeypatch):
    store = _store(tmp_path / "store.zarr", 64)
    _train(store, tmp_path / "run")
    seen = threads_seen_by(monkeypatch, evaluate, "score")
    evaluate.run(evaluate.EvaluateConfig(run=tmp_path / "run", store=store, device="cpu"))
    assert seen == [1]
    assert torch.get_num_threads() == CALLER


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_encodes_under_the_policy(
    workers, caller_threads, motion_data, tiny_extract, tmp_path, monkeypatch
):
    seen = threads_seen_by(monkeypatch, extract, "extract_local")
    extract.run(tiny_extract(motion_data, tmp_path / "store.zarr", decode_workers=workers))
    assert seen == [1]  # mote-tiny: one thread, whatever the workers
    assert torch.get_num_threads() == CALLER
