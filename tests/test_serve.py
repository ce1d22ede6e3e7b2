"""`mote serve` as a real process on 127.0.0.1: its answers equal the one-shot `mote search`'s,
every kind of query (text, a video of the collection, a raw vector, a base64 image) with each
hit's moment, the video endpoints (metadata, frames, thumbnails, the file with range requests),
/metrics, the refusals (400 with one JSON line, 404 for anything outside the collection, path
traversal tried, 413 past the body limit), a bounded load test, and a clean stop on SIGTERM.

A collection of real MP4s (PyAV) extracted by mote-tiny (seeded random weights) and embedded
without a run (CLIP mean pooling), in this process; the server is the venv's `mote` script.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import av
import numpy as np
import pytest
from PIL import Image
from serving import FPS, MOTE, Server, start

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore


@pytest.fixture
def collection(served_collection):
    """The served collection: (video root, store, embeddings)."""
    return served_collection


@pytest.fixture
def server(served):
    """The session's `mote serve` (tests/serving.py)."""
    return served


def one_shot(server: Server, *args: object) -> list[dict]:
    done = subprocess.run(
        [str(MOTE), "search", "--embeddings", str(server.embeddings), "--root", str(server.root),
         "--json", "--device", "cpu", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_text_answers_equal_the_one_shot_search_with_their_moments(server):
    status, health, _ = server.get("api/health")
    assert status == 200 and json.loads(health)["videos"] == 12
    for score in ("softmax", "cosine"):
        status, answer = server.post({"query": "a circle moving", "k": 5, "score": score})
        assert status == 200 and answer["took_ms"] > 0
        expected = one_shot(server, "a circle moving", "-k", 5, "--score", score)
        keys = ("rank", "video_id", "path", "label", "frame", "time_s")
        assert [{k: h[k] for k in keys} for h in answer["hits"]] == [
            {k: h[k] for k in keys} for h in expected
        ]
        assert [h["score"] for h in answer["hits"]] == pytest.approx(
            [h["score"] for h in expected], abs=1e-4
        )
        assert all(h["time_s"] == pytest.approx(h["frame"] / FPS, abs=1e-3) for h in answer["hits"])
    status, batch = server.post({"query": ["a circle moving", "a square"], "k": 3})
    assert status == 200 and [r["query"] for r in batch["results"]] == [
        "a circle moving",
        "a square",
    ]
    assert (
        batch["results"][0]["hits"] == server.post({"query": "a circle moving", "k": 3})[1]["hits"]
    )


def test_a_video_a_vector_and_an_image_are_queries_too(server, tmp_path):
    file = EmbeddingsFile.open(server.embeddings)
    ids = list(file.read_table().column("video_id").to_pylist())
    target = ids[4]
    status, like = server.post({"video_id": target, "k": 3})
    assert status == 200 and target not in [h["video_id"] for h in like["hits"]]
    assert [h["video_id"] for h in like["hits"]] == [
        h["video_id"] for h in one_shot(server, "--like", target, "-k", 3)
    ]
    vector = file.read_vectors([4])[0].astype(float).tolist()
    status, raw = server.post({"embedding": vector, "k": 1})
    assert status == 200 and raw["hits"][0]["video_id"] == target
    assert raw["hits"][0]["score"] == pytest.approx(1.0, abs=2e-3)
    status, batch = server.post({"embedding": [vector], "k": 1})  # a list of one: a batch
    assert status == 200 and [r["hits"] for r in batch["results"]] == [raw["hits"]]

    reader = FeatureStore.open(server.store)
    frame = int(np.asarray(reader.read_frame_indices([reader.video_ids.index(target)]))[0, 0, 3])
    with av.open(str(server.root / target)) as container:
        pixels = next(f for i, f in enumerate(container.decode(video=0)) if i == frame)
        Image.fromarray(pixels.to_ndarray(format="rgb24")).save(tmp_path / "still.png")
    encoded = base64.b64encode((tmp_path / "still.png").read_bytes()).decode()
    status, image = server.post({"image": "data:image/png;base64," + encoded, "k": 2})
    assert status == 200, image
    assert image["hits"][0]["video_id"] == target and image["hits"][0]["frame"] == frame


def test_video_metadata_frames_thumbnails_and_the_file_with_ranges(server):
    video_id = "circle_moving_left/circle_moving_left_001.mp4"
    quoted = urllib.request.quote(video_id)
    status, body, _ = server.get(f"api/videos/{quoted}")
    meta = json.loads(body)
    assert status == 200 and meta["label"] == "circle moving left" and meta["frame_rate"] == FPS
    assert meta["file"] and meta["path"] == str(server.root / video_id)
    assert meta["sampled_frames"] == sorted(meta["sampled_frames"]) and meta["sampled_frames"]
    status, body, _ = server.get(f"api/videos/{quoted}/frames")
    frames = json.loads(body)["frames"]
    assert status == 200 and len(frames) == 4
    for shown in frames:
        status, jpeg, headers = server.get(shown["src"])
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert Image.open(__import__("io").BytesIO(jpeg)).height == 160
    status, _, _ = server.get(f"api/videos/{quoted}/frames/9999.jpg")
    assert status == 404
    whole = (server.root / video_id).read_bytes()
    request = urllib.request.Request(server.url + f"api/videos/{quoted}/file")
    request.add_header("Range", "bytes=10-109")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 206 and answer.read() == whole[10:110]
        assert answer.headers["content-type"] == "video/mp4"


def test_refusals_are_one_json_line_and_nothing_outside_is_read(server, tmp_path):
    asked = {
        b"{not json": "not JSON",
        json.dumps({"query": "   "}).encode(): "query is empty",
        json.dumps({"query": "a", "k": 10**9}).encode(): "k must be a whole number from 1 to 1000",
        json.dumps({"query": "a", "k": "ten"}).encode(): "k must be a whole number",
        json.dumps({"query": "a", "video_id": "x"}).encode(): "exactly one of",
        json.dumps({"quer": "a"}).encode(): "unknown field(s) quer",
        json.dumps({"embedding": [0.1, 0.2]}).encode(): "a vector of 64 numbers",
        json.dumps({"image": "%%%"}).encode(): "not valid base64",
        json.dumps({"image": base64.b64encode(b"text").decode()}).encode(): "not an image",
        json.dumps(["a"]).encode(): "a JSON object",
        json.dumps({"query": "a", "score": "best"}).encode(): "score 'best'",
    }
    for body, reason in asked.items():
        status, answer = server.post(body)
        assert status == 400 and list(answer) == ["error"] and "\n" not in answer["error"]
        assert reason in answer["error"], (body, answer)
    status, answer = server.post({"video_id": "nope.mp4"})
    assert status == 404 and "not in the collection" in answer["error"]
    status, answer = server.post({"query": "x" * 60_000})  # past --max-body-mb 0.05
    assert status == 413 and "larger than" in answer["error"]

    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    escapes = [
        "/api/videos/../../../../etc/passwd/file",
        "/api/videos/..%2F..%2F..%2Fetc%2Fpasswd/file",
        f"/api/videos/{secret}/file",
        f"/api/videos/%2F{str(secret).lstrip('/')}/file",
        "/api/videos/circle_moving_left/../../s.zarr/zarr.json/file",
        "/../../etc/passwd",
        "/api/videos/circle_moving_left/circle_moving_left_001.mp4/../../../e.zarr/file",
    ]
    for target in escapes:
        status, body = server.raw("GET", target)
        assert status == 404, (target, body)
        assert b"root:" not in body and b"do not serve" not in body and b"zarr_format" not in body
    assert server.raw("DELETE", "/api/search")[0] == 405
    assert server.raw("PUT", "/api/videos/x")[0] == 405


def test_a_text_asked_again_skips_the_tower_and_gets_the_same_hits(server):
    first = server.post({"query": "a square moving across", "k": 4})[1]
    again = server.post({"query": "a square moving across", "k": 4})[1]
    assert again["hits"] == first["hits"]
    assert again["timing"]["encode_ms"] < first["timing"]["encode_ms"] / 3  # kept, not encoded


def test_metrics_count_what_was_served(server):
    before = metric(server, 'mote_requests_total{route="search",status="200"}')
    for _ in range(3):
        assert server.post({"query": "a square", "k": 2})[0] == 200
    assert metric(server, 'mote_requests_total{route="search",status="200"}') == before + 3
    assert metric(server, "mote_rows") == 12
    assert metric(server, 'mote_request_seconds_count{route="search"}') >= before + 3


def metric(server: Server, name: str) -> float:
    status, body, headers = server.get("metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_concurrent_clients_on_loopback_all_get_answers(server, capsys):
    clients, each = 8, 12
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(each):
            started = time.perf_counter()
            status, answer = server.post({"query": f"a circle {n} {i}", "k": 5})
            with lock:
                latencies.append(time.perf_counter() - started)
                if status != 200 or len(answer["hits"]) != 5:
                    failures.append(f"{status} {answer}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures and len(latencies) == clients * each
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    with capsys.disabled():
        print(f"\nmote serve load: {clients} clients x {each} searches, p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms")  # fmt: skip


def test_sigterm_stops_it_cleanly_and_the_default_host_is_loopback(collection):
    _, _, embeddings = collection
    process, url = start(embeddings, "--json")
    assert url.startswith("http://127.0.0.1:")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["url"] == url and summary["videos"] == 12
    taken = subprocess.run(
        [str(MOTE), "serve", "--embeddings", str(embeddings), "--port", url.rsplit(":", 1)[1][:-1],
         "--host", "256.1.1.1"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert taken.returncode == 2 and "cannot listen there" in taken.stderr


def test_an_index_serves_the_same_hits_as_exact_search(collection, server):
    pytest.importorskip("faiss")
    _, _, embeddings = collection
    process, url = start(embeddings, "--index", "hnsw")
    try:
        indexed = Server(url, process, server.root, embeddings, server.store)
        status, health, _ = indexed.get("api/health")
        assert status == 200 and json.loads(health)["search"] == "index hnsw"
        for body in (
            {"query": "a square", "k": 5},
            {"video_id": "square_moving_up/square_moving_up_000.mp4", "k": 4},
        ):
            got, want = indexed.post(body)[1]["hits"], server.post(body)[1]["hits"]
            assert [h["video_id"] for h in got] == [h["video_id"] for h in want]
    finally:
        process.kill()
        process.wait()
