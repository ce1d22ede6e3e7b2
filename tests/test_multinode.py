"""Two nodes on one machine: two torchrun launchers meet at a c10d rendezvous on 127.0.0.1, each
starting 2 gloo processes, and train-temporal gives the weights of one process with the same
global batch (the tolerance of tests/test_train_distributed.py).

Each launcher runs in its own working directory with a relative ``--out``, as two machines
with their own disks would: the run folder appears in exactly one of them, the directory of the
launcher that holds global rank 0 (a writer chosen by local rank 0 would make two).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import comparable_weights, random_store
from safetensors.torch import load_file

from mote.stages import train_temporal

CLASSES = tuple(f"class_{i}" for i in range(6))
SETTINGS = dict(layers=1, epochs=3, warmup_epochs=1, batch_size=16, micro_batches=4, lr=1e-3)
LAUNCH_TIMEOUT = 240  # seconds for both launchers together


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("multinode") / "train.zarr"
    ids = [f"v{i}.mp4" for i in range(48)]
    random_store(path, ids, [i % len(CLASSES) for i in range(48)], CLASSES, seed=3)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(store: Path, port: int, run_id: str, extra: list[str]) -> list[str]:
    """The launch line of one node, as docs/training.md gives it (loopback rendezvous)."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
        "--local-addr", "127.0.0.1",
        "-m", "mote.stages", "train-temporal", "--json", "--train", str(store),
        "--val", str(store), "--out", "run", "--device", "cpu", *flags, *extra,
    ]  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """End a launcher and the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def two_nodes(store: Path, nodes: list[Path], *extra: str) -> list[tuple[int, str, str]]:
    """Both launchers to the end: (exit status, stdout, stderr) of each; on a timeout both are
    killed with their workers and the test fails showing their stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "MOTE_DEBUG"))}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    command = node_command(store, free_port(), uuid.uuid4().hex[:8], list(extra))
    launchers = []
    try:
        for node in nodes:
            node.mkdir(exist_ok=True)
            launchers.append(
                subprocess.Popen(
                    command,
                    cwd=node,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )  # fmt: skip
            )
        outputs = [p.communicate(timeout=LAUNCH_TIMEOUT) for p in launchers]
        return [(p.returncode, *o) for p, o in zip(launchers, outputs, strict=True)]
    except subprocess.TimeoutExpired:
        for process in launchers:
            stop(process)
        logs = [process.communicate()[1][-3000:] for process in launchers]
        pytest.fail(f"the launchers did not finish in {LAUNCH_TIMEOUT} s:\n" + "\n---\n".join(logs))
    finally:
        for process in launchers:
            stop(process)


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_nodes_of_two_processes_match_one_process_and_only_global_rank_0_writes(
    store, tmp_path
):
    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    done = two_nodes(store, nodes)
    for (code, _, err), node in zip(done, nodes, strict=True):
        assert code == 0, f"{node.name}:\n{err[-3000:]}"
    writers = [node for node in nodes if (node / "run").exists()]
    assert len(writers) == 1  # global rank 0's node; the other node's local rank 0 wrote nothing
    printed = [line for _, out, _ in done for line in out.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 alone reports
    four = writers[0] / "run"

    one = tmp_path / "one"
    alone = train_temporal.run(
        train_temporal.TrainConfig(train=store, val=store, out=one, device="cpu", **SETTINGS)
    )
    a = comparable_weights(load_file(one / "model.safetensors"))
    b = comparable_weights(load_file(four / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=key)
    h1, h4 = history(one), history(four)
    assert [h["epoch"] for h in h4] == [1, 2, 3]  # one line per epoch, not one per rank
    for x, y in zip(h1, h4, strict=True):
        assert y["videos"] == x["videos"] == 48
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-4)
    assert json.loads(printed[0])["top1"] == pytest.approx(alone["top1"], abs=1e-6)
    config = json.loads((four / "config.json").read_text())
    assert config["world_size"] == 4 and config["train"]["micro_batches"] == 4
    assert sorted(p.name for p in four.iterdir()) == sorted(p.name for p in one.iterdir())

    # --resume reads the run on every rank: a node without it is refused up front, not left
    # to start over while the other node continues
    again = two_nodes(store, nodes, "--resume")
    assert all(code != 0 for code, _, _ in again)
    refused = "\n".join(err for _, _, err in again)
    assert "do not see the run" in refused and "a disk all nodes share" in refused, refused[-3000:]
    assert [h["epoch"] for h in history(four)] == [1, 2, 3]
