"""Two nodes on one machine: two torchrun launchers meet at a c10d rendezvous on 127.0.0.1, each
starting 2 gloo processes, and train-temporal and finetune-e2e each give the weights of one
process with the same global batch (the tolerance of the one-node DDP tests).

Each launcher runs in its own working directory with relative ``--out`` folders, as two
machines with their own disks would: the run folders appear in exactly one of them, the
directory of the launcher that holds global rank 0 (a writer chosen by local rank 0 would make
two), and the other stays empty. One pair of launchers runs every command in a row
(``multinode_commands.py``), so the rendezvous and the imports are paid once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from helpers import DDP_TOLERANCE, comparable_weights, random_store
from safetensors.torch import load_file

from mote.stages import finetune_e2e, train_temporal

CLASSES = tuple(f"class_{i}" for i in range(6))
TEMPORAL = dict(layers=1, epochs=3, warmup_epochs=1, batch_size=16, micro_batches=4, lr=1e-3)
# finetune-e2e at its tiniest: 8 videos, 2 epochs of 2 steps of 4 (one video per process; the
# shared permutation changes with the epoch), 2 frames. Without WMR a routed step leaves experts
# without gradient: DDP must allow it (pitfall 12). lr 1e-4: Adam's first step is
# lr * g / (|g| + eps), so a weight whose gradient is ~eps moves by rounding noise; at lr 1e-3
# three such weights of ~100k were 1.7e-5 to 4.2e-5 apart (at 1e-4 the worst is ~1e-6), while
# gradients left unaveraged would still move every weight by ~lr, 10x the tolerance.
E2E = dict(
    dataset="list", model="mote-tiny", pretrained="none", frames=2, layers=1, epochs=2,
    warmup_epochs=0, batch_size=4, micro_batches=4, lr=1e-4, clip_lr_ratio=1.0, workers=0,
    wmr=False,
)  # fmt: skip
E2E_VIDEOS = 8
WORKER = Path(__file__).with_name("multinode_commands.py")
PER_NODE = 2  # processes per launcher
WORLD = 2 * PER_NODE
LAUNCH_TIMEOUT = 300  # seconds for both launchers together


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("multinode") / "train.zarr"
    ids = [f"v{i}.mp4" for i in range(48)]
    random_store(path, ids, [i % len(CLASSES) for i in range(48)], CLASSES, seed=3)
    return path


@pytest.fixture(scope="module")
def videos(motion_data, tmp_path_factory) -> dict:
    """finetune-e2e's inputs: one video of each class of the session's motion videos."""
    lines = motion_data.list_file.read_text().splitlines()
    first = {}
    for line in lines:
        first.setdefault(line.rsplit(" ", 1)[1], line)
    assert len(first) == E2E_VIDEOS
    listed = tmp_path_factory.mktemp("multinode_videos") / "list.txt"
    listed.write_text("\n".join(first.values()) + "\n")
    return dict(root=motion_data.root, list_file=listed, labels_file=motion_data.labels_file)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flags(settings: dict) -> list[str]:
    """Command-line options of settings (``list_file``: ``--list``; booleans: ``--x/--no-x``)."""
    out = []
    for key, value in settings.items():
        name = {"list_file": "list", "labels_file": "labels"}.get(key, key).replace("_", "-")
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no-{name}")
        else:
            out.append(f"--{name}={value}")
    return out


def node_command(port: int, run_id: str, *commands: list[str]) -> list[str]:
    """The launch line of one node, as the README gives it (loopback rendezvous), running
    ``commands`` (each a `mote` command line) one after the other."""
    joined = [word for command in commands for word in ("--then", *command)][1:]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
        "--nproc-per-node", str(PER_NODE), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
        "--local-addr", "127.0.0.1", str(WORKER), *joined,
    ]  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """End a launcher and the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def two_nodes(nodes: list[Path], *commands: list[str]) -> list[tuple[int, str, str]]:
    """Both launchers to the end: (exit status, stdout, stderr) of each; on a timeout both are
    killed with their workers and the test fails showing their stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "MOTE_DEBUG"))}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    command = node_command(free_port(), uuid.uuid4().hex[:8], *commands)
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


def exits(stderr: str) -> list[tuple[str, int]]:
    """The (command, exit code) lines ``multinode_commands.py`` wrote, in order."""
    return [(m[1], int(m[2])) for m in re.finditer(r"mote (\S+): exit (\d+)", stderr)]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def assert_same_weights(one: Path, many: Path) -> None:
    a = comparable_weights(load_file(one / "model.safetensors"))
    b = comparable_weights(load_file(many / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"{many.name}: {WORLD} processes vs 1: max weight difference {worst:.2e}")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=DDP_TOLERANCE, rtol=0, msg=key)


@pytest.mark.slow
def test_two_nodes_of_two_processes_match_one_process_and_only_global_rank_0_writes(
    store, videos, tmp_path
):
    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    temporal = ["train-temporal", "--json", f"--train={store}", f"--val={store}", "--out=run"]
    temporal += ["--device=cpu", *flags(TEMPORAL)]
    # --resume reads the run on every rank: a node without it is refused up front, not left
    # to start over while the other node continues
    resumed = [*temporal, "--resume"]
    e2e = ["finetune-e2e", "--json", "--out=e2e", "--device=cpu", *flags({**E2E, **videos})]
    done = two_nodes(nodes, temporal, resumed, e2e)
    for (code, _, err), node in zip(done, nodes, strict=True):
        assert code == 0, f"{node.name}:\n{err[-3000:]}"
        assert exits(err) == [  # each node's processes, command by command
            *[("train-temporal", 0)] * PER_NODE, *[("train-temporal", 2)] * PER_NODE,
            *[("finetune-e2e", 0)] * PER_NODE,
        ], err[-3000:]  # fmt: skip
    refused = "\n".join(err for _, _, err in done)
    assert "do not see the run" in refused and "a disk all nodes share" in refused, refused[-3000:]

    writers = [node for node in nodes if (node / "run").exists()]
    assert len(writers) == 1  # global rank 0's node; the other node's local rank 0 wrote nothing
    writer, other = writers[0], next(node for node in nodes if node != writers[0])
    assert sorted(p.name for p in writer.iterdir()) == ["e2e", "run"]
    assert list(other.iterdir()) == []  # no rank of the other node wrote a file
    printed = [
        (node, json.loads(line))
        for (_, out, _), node in zip(done, nodes, strict=True)
        for line in out.splitlines()
        if line.startswith("{")
    ]
    assert [node for node, _ in printed] == [writer, writer]  # rank 0 alone reports, per command
    (_, temporal_printed), (_, e2e_printed) = printed

    # train-temporal: the weights, metrics and files of one process
    four, one = writer / "run", tmp_path / "one"
    alone = train_temporal.run(
        train_temporal.TrainConfig(train=store, val=store, out=one, device="cpu", **TEMPORAL)
    )
    assert_same_weights(one, four)
    h1, h4 = history(one), history(four)
    assert [h["epoch"] for h in h4] == [1, 2, 3]  # one line per epoch, not one per rank
    for x, y in zip(h1, h4, strict=True):
        assert y["videos"] == x["videos"] == 48
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-4)
    assert temporal_printed["top1"] == pytest.approx(alone["top1"], abs=1e-6)
    config = json.loads((four / "config.json").read_text())
    assert config["world_size"] == WORLD and config["train"]["micro_batches"] == 4
    assert sorted(p.name for p in four.iterdir()) == sorted(p.name for p in one.iterdir())
    assert [h["epoch"] for h in history(four)] == [1, 2, 3]  # the refused --resume left it

    # finetune-e2e: the tuned visual tower and MoTE of one process
    four, one = writer / "e2e", tmp_path / "e2e_one"
    finetune_e2e.run(finetune_e2e.FinetuneConfig(out=one, device="cpu", **E2E, **videos))
    assert_same_weights(one, four)
    assert any(key.startswith("clip.visual.") for key in load_file(four / "model.safetensors"))
    h1, h4 = history(one), history(four)
    assert [h["videos"] for h in h4] == [h["videos"] for h in h1] == [E2E_VIDEOS] * 2
    for x, y in zip(h1, h4, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-4)
    assert e2e_printed["epochs"] == 2 and e2e_printed["failed_videos"] == 0
    config = json.loads((four / "config.json").read_text())
    assert config["world_size"] == WORLD and config["source"] == "finetune-e2e"
    assert sorted(p.name for p in four.iterdir()) == sorted(p.name for p in one.iterdir())
