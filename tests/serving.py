"""`mote serve` as the tests start it: a collection of real MP4s (PyAV) extracted by mote-tiny
(seeded random weights) and embedded without a run, served by the venv's `mote` script on a free
port of 127.0.0.1. Session fixtures (imported by conftest.py), so tests/test_serve.py and
tests/test_serve_page.py share one collection and one server."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import tiny_extract_config

from mote.pipeline.data.synthetic import write_motion_dataset
from mote.stages import embed, extract

MOTE = Path(sys.executable).parent / "mote"
CLASSES = ("square moving right", "circle moving left", "circle approaching", "square moving up")
READY = re.compile(r"serving (\d+) videos at (http://127\.0\.0\.1:\d+/)")
FPS = 25  # write_motion_dataset's frame rate


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    root: Path
    embeddings: Path
    store: Path

    def get(self, path: str) -> tuple[int, bytes, dict]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read(), dict(refused.headers)

    def post(self, body: object | bytes, path: str = "api/search") -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    def raw(self, method: str, target: str) -> tuple[int, bytes]:
        """A request line sent as written (no client normalisation of ``..``)."""
        host, port = self.url.split("//")[1].rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()


def start(embeddings: Path, *args: object) -> tuple[subprocess.Popen, str]:
    """`mote serve` on a free port; returns once it prints the address it serves."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOTE_DEBUG": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [str(MOTE), "serve", "--embeddings", str(embeddings), "--port", "0", "--device", "cpu",
         *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = READY.search(line)
        if found:
            return process, found.group(2)
    process.kill()
    raise AssertionError("mote serve did not start:\n" + "".join(lines) + process.stderr.read())


@pytest.fixture(scope="session")
def served_collection(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(video root, store, embeddings): 3 videos of each of 4 classes, mean-pooled."""
    work = tmp_path_factory.mktemp("serve")
    data = write_motion_dataset(work / "videos", CLASSES, videos_per_class=3, frames=16,
                                size=(64, 48), seed=3)  # fmt: skip
    store, out = work / "s.zarr", work / "e.zarr"
    extract.run(tiny_extract_config(data, store))
    embed.run(embed.EmbedConfig(store=store, out=out, device="cpu"))
    return data.root, store, out


@pytest.fixture(scope="session")
def served(served_collection):
    root, store, embeddings = served_collection
    process, url = start(embeddings, "--root", root, "--max-body-mb", "0.05")
    yield Server(url, process, root, embeddings, store)
    process.kill()
    process.wait()
