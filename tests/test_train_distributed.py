"""The shared training loop on several processes: torchrun + gloo on the CPU, real stores.

A W-process run sees exactly the data and routing draws of a 1-process run with the same global
batch and micro-batches, so their weights agree up to the order of float sums in the gradient
all-reduce (measured: max difference ~1e-7; the tolerance is conftest's DDP_TOLERANCE, 1e-5).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DDP_TOLERANCE, comparable_weights
from safetensors.torch import load_file

from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.train.distributed import launcher_environment, rank_device
from mote.pipeline.train.sampler import (
    ShardedBatchSampler,
    check_micro_batches,
    default_micro_batches,
    rank_share,
)
from mote.pipeline.train.step import LossModule
from mote.stages import extract, train_temporal

WORKER = Path(__file__).with_name("multinode_commands.py")
COMMON = dict(layers=1, epochs=3, warmup_epochs=1, batch_size=10, lr=1e-3, clip_lr_ratio=1.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_extract) -> Path:
    """A small training store (2 random clips per video) of the motion videos."""
    work = tmp_path_factory.mktemp("ddp")
    data = write_motion_dataset(work / "videos", videos_per_class=3, seed=4)
    out = work / "train.zarr"
    extract.run(tiny_extract(data, out, views="2x1", sampling="train", decode_workers=1))
    return out


def _flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        name = "--" + key.replace("_", "-")
        if value is True:
            flags.append(name)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [name, str(value)]
    return flags


def torchrun(store: Path, out: Path, processes: int = 2, **settings) -> dict:
    """``torchrun --nproc-per-node N -m mote.stages train-temporal ... --json`` on the CPU."""
    return torchrun_runs(store, processes, {out: settings})[out]


def torchrun_runs(store: Path, processes: int, runs: dict[Path, dict]) -> dict[Path, dict]:
    """Each ``out: settings`` of ``runs`` trained by one torchrun of N processes; what rank 0
    printed for each. One run: the launch line users type. Several: one after the other in
    the same processes (``multinode_commands.py``), so the launch is paid once."""
    commands = []
    for out, settings in runs.items():
        args = {**COMMON, "train": store, "val": store, "out": out, "device": "cpu", **settings}
        commands.append(["train-temporal", "--json", *_flags(args)])
    if len(commands) == 1:
        target = ["-m", "mote.stages", *commands[0]]
    else:
        target = [str(WORKER), *[w for c in commands for w in ("--then", *c)][1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        + ["--standalone", *target],
        capture_output=True,
        text=True,
        timeout=150 * len(commands),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if len(commands) > 1:  # the worker's line per command and process
        exits = re.findall(r"mote train-temporal: exit (\d+)", result.stderr)
        assert exits == ["0"] * (processes * len(commands)), result.stderr[-3000:]
    # DDP searches for unused parameters only where a step can leave one without a gradient
    assert "did not find any unused parameters" not in result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == len(runs), result.stdout  # rank 0 alone reports
    return {out: json.loads(line) for out, line in zip(runs, printed, strict=True)}


def in_process(store: Path, out: Path, **settings) -> dict:
    cfg = {**COMMON, "train": store, "val": store, "out": out, "device": "cpu", **settings}
    return train_temporal.run(train_temporal.TrainConfig(**cfg))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ sampler


def test_sampler_covers_every_item_once_and_keeps_the_last_partial_batch():
    sampler = ShardedBatchSampler(23, batch_size=5, micro_batches=1)
    batches = list(sampler)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3] and len(sampler) == 5
    assert sorted(i for b in batches for i in b) == list(range(23))


def test_sampler_permutation_is_shared_by_ranks_and_changes_with_the_epoch():
    ranks = [ShardedBatchSampler(40, 8, 4, rank=r, world_size=2, seed=7) for r in range(2)]
    assert np.array_equal(ranks[0].permutation(), ranks[1].permutation())
    first = ranks[0].permutation()
    again = ShardedBatchSampler(40, 8, 4, rank=0, world_size=2, seed=7).permutation()
    assert np.array_equal(first, again)  # a function of (seed, epoch) only: resumable
    ranks[0].set_epoch(1)
    assert not np.array_equal(first, ranks[0].permutation())
    assert sorted(ranks[0].permutation()) == list(range(40))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_shards_are_disjoint_and_make_up_the_global_batch(world):
    samplers = [ShardedBatchSampler(27, 10, 4, rank=r, world_size=world) for r in range(world)]
    single = ShardedBatchSampler(27, 10, 4)
    for step, shares in enumerate(zip(*samplers, strict=True)):
        glob = single.global_batches()[step]
        assert sum(len(s) for s in shares) == len(glob)
        assert [i for s in shares for i in s] == glob.tolist()  # in order, no overlap
        # each rank's share re-split is exactly its global micro-batches
        parts = torch.as_tensor(glob).tensor_split(4)
        for rank, share in enumerate(shares):
            mine = torch.as_tensor(share, dtype=torch.long).tensor_split(4 // world)
            expected = parts[rank * 4 // world : (rank + 1) * 4 // world]
            assert [m.tolist() for m in mine] == [p.tolist() for p in expected]
    assert rank_share(7, 4, 1, 2) == slice(4, 7)  # micro-batch sizes 2, 2, 2, 1


def test_micro_batches_must_divide_among_the_processes():
    check_micro_batches(4, 2)
    with pytest.raises(ConfigError, match="not a positive multiple of the 2 processes"):
        check_micro_batches(3, 2)


# ------------------------------------------------------------------------------ processes


PROCESS_CASES = {
    # without WMR a routed step leaves experts without gradient (pitfall 12): the fused step
    # gives them zeros and drops them after the all-reduce, so DDP needs no unused-parameter
    # search; the per-micro-batch step needs it
    "2 processes, fused, no WMR": (2, dict(micro_batches=2, wmr=False)),
    "4 processes, fused": (4, dict(micro_batches=4)),
    "4 processes, one by one, no WMR": (4, dict(micro_batches=4, wmr=False, fused=False)),
}


@pytest.fixture(scope="module")
def four_processes(store, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The 4-process cases trained by one launch (starting 4 processes on 2 cores costs more
    than their runs): case -> (run folder, what rank 0 printed)."""
    work = tmp_path_factory.mktemp("four_processes")
    cases = {case: s for case, (n, s) in PROCESS_CASES.items() if n == 4}
    outs = {case: work / f"run{i}" for i, case in enumerate(cases)}
    printed = torchrun_runs(store, 4, {outs[case]: cases[case] for case in cases})
    return {case: (outs[case], printed[outs[case]]) for case in cases}


@pytest.mark.slow
@pytest.mark.parametrize("case", PROCESS_CASES)
def test_processes_match_one_with_the_same_batch_and_only_rank_0_writes(
    store, tmp_path, case, request
):
    processes, settings = PROCESS_CASES[case]
    one = in_process(store, tmp_path / "one", **settings)
    if processes == 4:
        many, two = request.getfixturevalue("four_processes")[case]
    else:
        many = tmp_path / "two"
        two = torchrun(store, many, processes, **settings)
    a = comparable_weights(weights(tmp_path / "one"))
    b = comparable_weights(weights(many))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=DDP_TOLERANCE, rtol=0, msg=key)
    # the epochs' summed metrics agree too: the ranks' sums are all-reduced
    h1, h2 = history(tmp_path / "one"), history(many)
    assert [h["epoch"] for h in h2] == [1, 2, 3]  # one line per epoch, not one per rank
    for x, y in zip(h1, h2, strict=True):
        assert y["videos"] == x["videos"]
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-4)
        assert y["train_top1"] == pytest.approx(x["train_top1"], abs=1e-6)
    assert two["top1"] == pytest.approx(one["top1"], abs=1e-6)
    config = json.loads((many / "config.json").read_text())
    assert config["world_size"] == processes and config["precision"] == "fp32"
    files = sorted(p.name for p in many.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_with_the_uninterrupted_weights(store, tmp_path):
    """Also: 2 processes without --micro-batches take 4 (the reference's 3 would be refused)."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    # the uninterrupted run and the stopped one share a launch; the resume has fresh processes
    stopped = torchrun_runs(store, 2, {whole: {}, part: dict(stop_after_epochs=1)})[part]
    config = json.loads((whole / "config.json").read_text())
    assert config["train"]["micro_batches"] == 4 and config["world_size"] == 2
    assert stopped["stopped_after_epoch"] == 1
    assert json.loads((part / "config.json").read_text())["world_size"] == 2
    torchrun(store, part, resume=True)
    a, b = weights(whole), weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in history(part)] == [1, 2, 3]
    # the checkpoint holds every rank's random state and each micro-batch slot's generator
    from safetensors import safe_open

    with safe_open(part / "checkpoint.safetensors", "pt") as f:
        names = set(f.keys())
    assert {"rank0.torch", "rank1.torch"} <= names
    assert {f"routing.{slot}" for slot in range(4)} <= names


# ------------------------------------------------------------------------------ ranks, devices


@pytest.mark.parametrize("world, expected", [(1, 3), (2, 4), (3, 3), (4, 4), (8, 8), (16, 16)])
def test_default_micro_batches_follow_the_process_count(world, expected):
    """At least the reference's 3 draws per step, the same whole number on every process."""
    assert default_micro_batches(world) == expected
    check_micro_batches(default_micro_batches(world), world)


def test_a_rank_uses_the_gpu_its_launcher_shows_it():
    cuda, cuda1 = torch.device("cuda"), torch.device("cuda", 1)
    assert rank_device(cuda, None, count=2) == torch.device("cuda", 0)  # one process
    assert rank_device(cuda1, None, count=2) == cuda1  # --device cuda:1
    assert rank_device(cuda, 3, count=8) == torch.device("cuda", 3)  # torchrun, 8 GPUs seen
    assert rank_device(cuda, 3, count=1) == torch.device("cuda", 0)  # its own GPU only (SLURM)
    with pytest.raises(ConfigError, match="LOCAL_RANK 3: only 2 CUDA devices here"):
        rank_device(cuda, 3, count=2)
    with pytest.raises(ConfigError, match=r"--device cuda:1: only 1 CUDA device\(s\) here"):
        rank_device(cuda1, None, count=1)


@pytest.mark.parametrize(
    "overrides, fused, unused",
    [
        ({}, True, False),
        ({}, False, False),  # WMR merges every expert into each step
        ({"wmr": False}, True, False),  # fused: unrouted experts get zeros, dropped later
        ({"wmr": False}, False, True),  # one by one: unrouted experts get no gradient
        ({"wmr": False, "routing": "all"}, False, False),
        ({"arch": "transformer"}, False, False),
    ],
)
def test_ddp_searches_for_unused_parameters_only_where_a_step_leaves_some(overrides, fused, unused):
    head = MoTE(default_config(32, layers=1, **overrides))
    assert LossModule(head, None).leaves_parameters_unused(fused) is unused


def test_compiled_losses_under_torchrun_are_one_graph_with_one_recompile(store, tmp_path):
    """``--compile`` on 2 processes (gloo, aot_eager): the gradient sync is one all-reduce
    after the backward, not DDP, so no graph splitter cuts the compiled losses: on every rank
    one graph for full batches, at most one recompile for the epoch's smaller last batch, and
    no graph break (issue 29)."""
    args = {**COMMON, "train": store, "out": tmp_path / "run", "device": "cpu", "compile": True}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
        + [str(WORKER.with_name("compile_counts.py")), "train-temporal", *_flags(args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [json.loads(m) for m in re.findall(r"^COUNTS (.*)$", result.stderr, re.MULTILINE)]
    assert sorted(c["rank"] for c in counts) == [0, 1], result.stderr[-3000:]
    for c in counts:
        assert c["exit"] == 0 and c["breaks"] == 0, c
        assert 1 <= c["graphs"] <= 2 and c["backend_graphs"] == c["graphs"], c


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "x"}, "MASTER_PORT='x'"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
    ],
)
def test_a_half_set_launcher_environment_is_one_line(env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        launcher_environment(env)
    assert launcher_environment({}) == (1, 0, 0)
    full = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}
    assert launcher_environment({**full, "MASTER_PORT": "29500"}) == (4, 3, 1)


def test_the_cli_names_a_missing_master_addr(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "MOTE_DEBUG"))}
    env.update(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "mote.stages", "train-temporal", "--train", str(tmp_path / "s")]
        + ["--out", str(tmp_path / "run"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "MASTER_ADDR" in lines[0] and "unexpected" not in lines[0]
