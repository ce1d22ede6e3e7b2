"""A torchrun peer that dies (kill -9) is a system fault, not a bug in mote: the process that
sees it exits 4 with one line naming the stopped process and the way on, and the same launch
line with --resume continues the run (issue 26). Two launchers on loopback stand in for two
nodes (gloo on the CPU), as in tests/test_multinode.py."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from pathlib import Path

import pytest
from helpers import random_store
from test_faults_exit_codes import CLASSES
from test_multinode import WORKER, free_port, stop

from mote.pipeline.runs.run_folder import RunFolder

LINE = re.compile(
    r"^error: process 1 of 2 stopped \((connection (reset|closed) by peer|[^)]+)\): rerun the "
    r"same launch line with --resume$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("peer") / "s.zarr"
    random_store(path, [f"v{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES)
    return path


def launch(nodes: list[Path], run_id: str, port: int, *args: object) -> list:
    """One torchrun launcher per node folder (1 process each), running ``mote ARGS``."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "MOTE_DEBUG"))}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
        "--local-addr", "127.0.0.1", str(WORKER), *map(str, args),
    ]  # fmt: skip
    for node in nodes:
        node.mkdir(exist_ok=True)
    return [
        subprocess.Popen(command, cwd=node, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        for node in nodes
    ]  # fmt: skip


def rank_pid(run_id: str, rank: int) -> int | None:
    """The worker process of ``rank`` in the torchrun job ``run_id`` (from /proc)."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            words = set(environ.read_bytes().split(b"\0"))
        except OSError:
            continue
        if {f"TORCHELASTIC_RUN_ID={run_id}".encode(), f"RANK={rank}".encode()} <= words:
            return int(environ.parent.name)
    return None


def finish(launchers: list, until: str | None = None) -> list[str]:
    """Each launcher's stderr once all have ended, or once one holds ``until`` (then all are
    stopped: a launcher whose peer died may wait on its rendezvous)."""
    import subprocess

    texts = [""] * len(launchers)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            for i, process in enumerate(launchers):
                if process.returncode is not None:
                    continue
                try:
                    texts[i] = process.communicate(timeout=1)[1]
                except subprocess.TimeoutExpired as partial:
                    texts[i] = (partial.stderr or b"").decode(errors="replace")
            if all(p.returncode is not None for p in launchers):
                break
            if until is not None and any(until in text for text in texts):
                break
    finally:
        for process in launchers:
            stop(process)
    return texts


def test_a_killed_peer_is_exit_4_and_resume_continues(store, tmp_path):
    import os

    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    run = tmp_path / "run"  # on a disk both nodes see: --resume reads it on every rank
    train = ("train-temporal", "--train", store, "--out", run, "--device", "cpu", "--layers", 1,
             "--batch-size", 8, "--micro-batches", 2, "--epochs", 3000)  # fmt: skip
    run_id = uuid.uuid4().hex[:8]
    launchers = launch(nodes, run_id, free_port(), *train)
    deadline = time.monotonic() + 180
    victim = None
    while time.monotonic() < deadline and all(p.poll() is None for p in launchers):
        if RunFolder(run).has_checkpoint():
            victim = rank_pid(run_id, 1)
            if victim is not None:
                break
        time.sleep(0.2)
    assert victim is not None, "rank 1 was not found training"
    os.kill(victim, signal.SIGKILL)
    errors = finish(launchers, until="mote train-temporal: exit")
    seen = [err for err in errors if "mote train-temporal: exit" in err]
    assert len(seen) == 1, errors  # rank 0's worker; rank 1's was killed
    assert "mote train-temporal: exit 4" in seen[0], seen[0][-3000:]
    assert LINE.search(seen[0]), seen[0][-3000:]
    assert "unexpected" not in seen[0] and "report it" not in seen[0]
    # where a resume starts: the checkpoint's epochs (a kill between an epoch's history line and
    # its checkpoint leaves one line more; the resume cuts it and redoes that epoch)
    done = RunFolder(run).checkpoint_epoch()
    gone = time.monotonic() + 30  # rank 0's worker, stopped with its launcher, lets go of the run
    while rank_pid(run_id, 0) is not None and time.monotonic() < gone:
        time.sleep(0.2)

    # the way out: the same launch line with --resume (stopping after one more epoch)
    errors = finish(launch(nodes, uuid.uuid4().hex[:8], free_port(), *train, "--resume",
                           "--stop-after-epochs", 1))  # fmt: skip
    assert all("mote train-temporal: exit 0" in err for err in errors), errors
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, done + 2))
