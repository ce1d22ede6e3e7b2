"""The decode worker pool: results for every task, timeouts and dead workers become failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.synthetic import read_frame_number, write_numbered_video
from mote.pipeline.video.decode_pool import DecodePool, DecodeTask, decode_one


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    short = write_numbered_video(root / "short.mp4", 40, size=(64, 48))
    long = write_numbered_video(root / "long.mp4", 1500, size=(320, 240), gop=250)
    return short, long


def task(index: int, path, **kw) -> DecodeTask:
    settings = dict(frames=8, clips=1, crops=1, size=48)
    settings.update(kw)
    return DecodeTask(index=index, path=str(path), **settings)


def collect(pool: DecodePool, expected: int, limit_s: float = 60):
    results = {}
    deadline = time.monotonic() + limit_s
    while len(results) < expected and time.monotonic() < deadline:
        for video in pool.results(timeout_s=0.5):
            results[video.index] = video
    return results


def test_decode_one_crops_the_sampled_frames(videos):
    short, _ = videos
    video = decode_one(task(0, short, size=48, clips=2, crops=3))
    assert video.ok
    assert video.views.shape == (6, 8, 48, 48, 3)
    assert video.frame_indices.shape == (6, 8)
    assert video.num_frames == 40
    # view 0 is clip 0 / crop 0 (left); crop 2 (centre) of the same clip holds the same frames
    np.testing.assert_array_equal(video.frame_indices[0], video.frame_indices[2])
    np.testing.assert_array_equal(video.frame_indices[0], [0, 5, 10, 15, 20, 25, 30, 35])


def test_frame_numbers_survive_decode_and_centre_crop(tmp_path):
    path = write_numbered_video(tmp_path / "n.mp4", 64, size=(64, 64), gop=5)
    video = decode_one(task(0, path, size=64))
    got = [read_frame_number(frame) for frame in video.views[0]]
    assert got == list(video.frame_indices[0])


def test_pool_returns_every_task_once(videos):
    short, _ = videos
    with DecodePool(workers=2, timeout_s=60) as pool:
        for i in range(6):
            pool.submit(task(i, short))
        results = collect(pool, 6)
    assert sorted(results) == list(range(6))
    assert all(video.ok for video in results.values())


def test_timeout_fails_only_that_video_and_the_pool_recovers(videos):
    short, long = videos
    with DecodePool(workers=1, timeout_s=0.001) as pool:
        pool.submit(task(0, long, frames=64))  # no decode finishes within 1 ms
        pool.timeout_s = 60
        pool.submit(task(1, short))  # queued on the same worker, behind the doomed video
        results = collect(pool, 2)
    assert "timed out" in results[0].reason
    assert results[1].ok


def test_a_killed_worker_is_replaced_and_its_queue_requeued(videos):
    short, long = videos
    with DecodePool(workers=1, timeout_s=60) as pool:
        pid = pool._workers[0].process.pid
        os.kill(pid, signal.SIGSTOP)  # frozen: it cannot finish anything, however fast it is
        pool.submit(task(0, long, frames=64))
        pool.submit(task(1, short))
        os.kill(pid, signal.SIGKILL)  # dies with video 0 certainly in flight
        results = collect(pool, 2)
    assert "crashed (SIGKILL)" in results[0].reason
    assert results[1].ok


def test_submitting_to_a_worker_that_just_died_does_not_stop_the_run(videos):
    short, _ = videos
    with DecodePool(workers=1, timeout_s=60) as pool:
        worker = pool._workers[0]
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()  # dead, but the pool has not looked yet
        for i in range(3):
            pool.submit(task(i, short))
        results = collect(pool, 3)
    assert sorted(results) == [0, 1, 2]
    assert sum(video.ok for video in results.values()) >= 2  # at most the first is lost


def test_an_unexpected_error_becomes_a_failure_reason(tmp_path):
    path = write_numbered_video(tmp_path / "n.mp4", 20, size=(64, 48))
    video = decode_one(task(0, path, crops=2))  # crop_views only knows 1 or 3 crops
    assert not video.ok and "unexpected" in video.reason


POOL_SCRIPT = """
from mote.pipeline.video.decode_pool import DecodePool, DecodeTask
with DecodePool(workers=2, timeout_s=60) as pool:
    for i in range(3):
        pool.submit(DecodeTask(i, {path!r}, frames=8, clips=1, crops=1, size=48))
    got = {{}}
    while len(got) < 3:
        got.update((v.index, v.reason or "ok") for v in pool.results(timeout_s=1))

print(sorted(got.items()))
"""


@pytest.mark.parametrize("how", ["-", "-i", "-c", "file"], ids=["stdin", "repl", "-c", "file"])
def test_workers_start_whatever_the_main_module_is(videos, tmp_path, how):
    """No main file (``python -``), an interactive console, ``-c``, a script file: a worker
    never imports ``__main__``, so the script needs no ``if __name__ == "__main__"`` guard."""
    script = POOL_SCRIPT.format(path=str(videos[0]))
    (tmp_path / "script.py").write_text(script)
    args, stdin = {"-c": (["-c", script], ""), "file": (["script.py"], "")}.get(
        how, ([how], script)
    )
    done = subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[(0, 'ok'), (1, 'ok'), (2, 'ok')]" in done.stdout


FROM_STDIN = """
import json
from mote.stages.extract import ExtractConfig, run

settings = json.loads({settings!r})
print(json.dumps(run(ExtractConfig(**settings))))
"""


def test_a_script_read_from_stdin_decodes_in_worker_processes(motion_data, tmp_path):
    """``python - <<EOF``: the workers have no main file to re-import, and need none."""
    out = tmp_path / "stdin.zarr"
    settings = dict(
        dataset="list",
        out=str(out),
        root=str(motion_data.root),
        list_file=str(motion_data.list_file),
        labels_file=str(motion_data.labels_file),
        model="mote-tiny",
        pretrained="none",
        devices="cpu",
        decode_workers=2,
        limit=4,
    )
    script = FROM_STDIN.format(settings=json.dumps(settings))
    done = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["n_done"], summary["n_failed"], summary["decode_workers"]) == (4, 0, 2)
    assert FeatureStore.open(out).done_mask().all()
