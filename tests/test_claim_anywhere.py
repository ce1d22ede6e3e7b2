"""The writer's claim behaves the same on a local folder and on S3 (a real moto server on
loopback): a live holder is refused by name, a gone one is taken over with its record kept,
release leaves nothing. On S3 the lease adds its own cases: another host's live lease refuses,
an ended one is taken over, of two takers only one wins, and an owner whose claim was taken
stops being the owner.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import S3_BUCKET

from mote.cache_schema.claim import CLAIM_FILE, ClaimOwner, StoreBusy
from mote.cache_schema.remote_claim import RemoteClaim, _Object, claim_location

HOLD = (
    "import sys; from mote.cache_schema.remote_claim import claim_location; "
    "c = claim_location(sys.argv[1]); print('claimed', flush=True); sys.stdin.read(); "
    "c.release()"
)
DIE_HOLDING = (
    "import os, sys; from mote.cache_schema.remote_claim import claim_location; "
    "claim_location(sys.argv[1]); os._exit(0)"
)


class Where:
    """A store location (a folder or an s3:// URL) and how to look at its claim record."""

    def __init__(self, location: str, read) -> None:
        self.location, self._read = location, read

    def record(self) -> str | None:
        try:
            return self._read()
        except FileNotFoundError:
            return None


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> Where:
    if request.param == "local":
        path = tmp_path / "s.zarr"
        return Where(str(path), lambda: (path / CLAIM_FILE).read_text())
    s3 = request.getfixturevalue("s3")
    key = f"{S3_BUCKET}/claims/{request.node.originalname}/s.zarr"
    return Where(f"s3://{key}", lambda: s3.cat_file(f"{key}/{CLAIM_FILE}").decode())


class Holder:
    """A helper process that holds a store's claim until it is told to let go."""

    def __init__(self, location: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, location], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout.readline().strip() == b"claimed"

    def let_go(self) -> None:
        self.process.communicate(b"", timeout=60)
        assert self.process.returncode == 0


def test_a_live_holder_is_refused_by_name_and_release_leaves_nothing(where):
    holder = Holder(where.location)
    try:
        with pytest.raises(StoreBusy) as refused:
            claim_location(where.location)
        message = str(refused.value)
        assert message.startswith(f"{where.location}: another run (pid {holder.process.pid} ")
        assert f"on host {socket.gethostname()} since " in message
        assert message.endswith("is writing this store; wait for it to end or stop it, then rerun.")
    finally:
        holder.let_go()
    assert where.record() is None  # the holder's release deleted its record
    with claim_location(where.location) as claim:
        assert claim.held and claim.taken_over is None
        assert ClaimOwner.parse(where.record()) == claim.owner
    assert not claim.held and where.record() is None


def test_the_claim_of_a_gone_process_is_taken_over_naming_it(where):
    dead = subprocess.run([sys.executable, "-c", DIE_HOLDING, where.location], timeout=60)
    assert dead.returncode == 0
    old = ClaimOwner.parse(where.record())
    assert old is not None and not old.alive()
    with claim_location(where.location) as claim:
        assert claim.taken_over == old and claim.gone == "a run that is gone"
        assert ClaimOwner.parse(where.record()).pid == claim.owner.pid != old.pid


def other_host_record(lease_until: float) -> bytes:
    """A claim record of a run on another machine, its lease ending at ``lease_until``."""
    owner = ClaimOwner(
        host="node-7",
        pid=4242,
        process_start=1,
        boot_id="x",
        since="2026-01-01T00:00:00+00:00",
        command="mote extract --out s3://...",
    )
    fields = {**json.loads(owner.to_json()), "lease_seconds": 60, "lease_until": lease_until}
    return json.dumps(fields).encode()


def test_another_hosts_live_lease_refuses_and_an_ended_one_is_taken_over(s3):
    url = f"s3://{S3_BUCKET}/claims/lease/s.zarr"
    key = f"{S3_BUCKET}/claims/lease/s.zarr/{CLAIM_FILE}"
    s3.pipe_file(key, other_host_record(time.time() + 3600))
    with pytest.raises(StoreBusy, match=r"another run \(pid 4242 on host node-7 since 2026-01-01"):
        RemoteClaim.acquire(url)
    assert ClaimOwner.parse(s3.cat_file(key).decode()).host == "node-7"  # left alone
    s3.pipe_file(key, other_host_record(time.time() - 1))
    with RemoteClaim.acquire(url) as claim:
        assert claim.taken_over.host == "node-7" and claim.taken_over.pid == 4242
        assert claim.gone == "a run whose lease ran out"
        assert ClaimOwner.parse(s3.cat_file(key).decode()) == claim.owner
    assert not s3.exists(key)


def test_of_two_takers_of_an_ended_lease_only_one_wins(s3):
    url = f"s3://{S3_BUCKET}/claims/race/s.zarr"
    key = f"{S3_BUCKET}/claims/race/s.zarr/{CLAIM_FILE}"
    s3.pipe_file(key, other_host_record(time.time() - 1))
    first, second = _Object(url, None), _Object(url, None)
    seen = first.read()[2]
    assert second.read()[2] == seen  # both saw the same ended lease
    assert first.put(b'{"host": "a", "pid": 1}', IfMatch=seen) is not None
    assert second.put(b'{"host": "b", "pid": 2}', IfMatch=seen) is None
    assert json.loads(s3.cat_file(key))["host"] == "a"
    assert second.put(b"{}", IfNoneMatch="*") is None  # nor can it create one over it


def test_the_owner_renews_its_lease_and_knows_when_its_claim_was_taken(s3):
    url = f"s3://{S3_BUCKET}/claims/renew/s.zarr"
    key = f"{S3_BUCKET}/claims/renew/s.zarr/{CLAIM_FILE}"
    claim = RemoteClaim.acquire(url, lease=0.6)
    try:
        first = json.loads(s3.cat_file(key))["lease_until"]
        deadline = time.monotonic() + 30
        while json.loads(s3.cat_file(key))["lease_until"] == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        assert claim.held
        s3.pipe_file(key, other_host_record(time.time() + 3600))  # another run took it
        while not claim.lost:
            assert time.monotonic() < deadline, "the owner never noticed"
            time.sleep(0.05)
        assert not claim.held
        with pytest.raises(StoreBusy, match="another run took this store's claim over"):
            claim.check(url)
    finally:
        claim.release()
    assert json.loads(s3.cat_file(key))["host"] == "node-7"  # release left the new owner's


def test_a_local_folder_and_a_url_claim_differently(tmp_path: Path, s3):
    with claim_location(tmp_path / "s.zarr") as claim:
        assert type(claim).__name__ == "StoreClaim"
    with claim_location(f"s3://{S3_BUCKET}/claims/kind/s.zarr") as claim:
        assert isinstance(claim, RemoteClaim) and claim.lease == 60
