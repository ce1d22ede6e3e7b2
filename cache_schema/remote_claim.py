"""One writer per store on object storage (s3://): a claim object with a lease its owner renews.

An fcntl lock and a pid check mean nothing across machines, so a store at a URL is claimed by
creating ``STORE/.mote-claim.json`` with a conditional write (``PutObject`` with
``If-None-Match: *``: exactly one creator wins). The object records the owner (as the local
claim's record does: host, pid, since, command) and when its lease ends; a thread of the owner
rewrites it every third of the lease. A second writer is refused naming the owner while the
lease runs; once it has ended (the owner died or lost the network), or at once when the owner
is a gone process of this same host, the claim is taken over with a notice, by a write that
succeeds only if the object is unchanged (``If-Match`` on its ETag), so of two takers one wins.
Release deletes the object. Leases compare wall clocks, so hosts need clocks within a few
seconds of each other (NTP); the default lease of 60 s leaves room for that.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any

from mote.cache_schema.claim import (
    CLAIM_FILE,
    ClaimOwner,
    StoreBusy,
    StoreClaim,
    _busy,
    refuse_if_claimed,
)
from mote.cache_schema.store_errors import StoreError, short_error
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, filesystem, locate

LEASE_SECONDS = 60.0
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class _Object:
    """The claim object of one store URL, through s3fs's own client (its loop and session)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None) -> None:
        scheme = url.split("://", 1)[0]
        fs, key = filesystem(url, storage_options, "writing")
        if not hasattr(fs, "get_s3"):
            raise ConfigError(
                f"{url}: writing a store to {scheme}:// is not supported yet (only s3://, whose "
                "conditional writes make the claim safe); write locally and upload"
            )
        self.url, self.fs = url, fs
        self.bucket, _, prefix = key.partition("/")
        self.key = f"{prefix}/{CLAIM_FILE}" if prefix else CLAIM_FILE

    def _call(self, method: str, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        async def call() -> Any:
            await self.fs.set_session()
            client = await self.fs.get_s3(self.bucket)
            return await getattr(client, method)(Bucket=self.bucket, Key=self.key, **kwargs)

        return sync(self.fs.loop, call)

    def read(self) -> tuple[ClaimOwner | None, dict, str] | None:
        """The record (owner, raw fields) and its ETag, or None when there is no claim object."""
        try:
            reply = self._call("get_object")
        except Exception as err:
            if _code(err) in {"NoSuchKey", "404"}:
                return None
            raise self._unreachable(err) from None
        from fsspec.asyn import sync

        body = sync(self.fs.loop, reply["Body"].read).decode("utf-8", errors="replace")
        try:
            raw = json.loads(body)
        except ValueError:
            raw = {}
        return ClaimOwner.parse(body), raw if isinstance(raw, dict) else {}, reply["ETag"]

    def put(self, body: bytes, **condition: str) -> str | None:
        """Write the record if ``condition`` holds (IfNoneMatch / IfMatch); its ETag, or None
        when another writer got there first."""
        try:
            return self._call("put_object", Body=body, **condition)["ETag"]
        except Exception as err:
            if _code(err) in _CONFLICT or (condition.get("IfMatch") and _code(err) == "NoSuchKey"):
                return None
            raise self._unreachable(err) from None

    def delete(self, etag: str) -> None:
        """Delete the object when it is still the one we wrote (``etag``)."""
        found = self.read()
        if found is not None and found[2] == etag:
            self._call("delete_object")

    def _unreachable(self, err: Exception) -> StoreError:
        return StoreError(
            f"{self.url}: cannot claim the store ({short_error(err, 160)}); check the URL, the "
            "credentials (AWS_* environment or --storage-options) and the endpoint."
        )


def _code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class RemoteClaim(StoreClaim):
    """The claim on one store URL; get it with ``RemoteClaim.acquire``, release it once.

    The same interface as the local ``StoreClaim`` (``owner``, ``taken_over``, ``held``,
    ``check``, ``release``), so the writing run does not care where its store is."""

    def __init__(
        self, url: Url, obj: _Object, owner: ClaimOwner, etag: str, lease: float, taken_over
    ) -> None:
        self.path = url  # type: ignore[assignment]
        self.file = f"{url.rstrip('/')}/{CLAIM_FILE}"  # type: ignore[assignment]
        self.owner = owner
        self.taken_over = taken_over
        self.lease = lease
        self.lost = False  # set when another writer took the claim over (our lease had ended)
        self._obj, self._etag, self._id = obj, etag, ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._fd = None

    @classmethod
    def acquire(  # type: ignore[override]
        cls,
        url: str,
        storage_options: dict[str, Any] | None = None,
        lease: float = LEASE_SECONDS,
        kind: str = StoreClaim.KIND,
    ) -> RemoteClaim:
        """Claim the store at ``url`` or raise StoreBusy naming the owner while its lease runs
        (``kind`` names what is claimed in messages: a store, an embeddings file)."""
        url = Url(str(url).rstrip("/"))
        obj = _Object(url, storage_options)
        for _ in range(100):  # retried only while other writers change the object under us
            owner, owner_id = ClaimOwner.me(), uuid.uuid4().hex
            body = _record(owner, owner_id, lease)
            etag = obj.put(body, IfNoneMatch="*")
            taken_over = old = None
            if etag is None:
                found = obj.read()
                if found is None:
                    continue  # released between our write and our read
                old, raw, old_etag = found
                if old is not None and not _ended(old, raw):
                    raise _busy(url, old, kind)  # type: ignore[arg-type]
                etag = obj.put(body, IfMatch=old_etag)
                if etag is None:
                    continue  # another taker won; look again
                taken_over = old
            claim = cls(url, obj, owner, etag, lease, taken_over)
            claim.KIND = kind
            if old is not None and not (old.on_this_host() and not old.alive()):
                claim.gone = "a run whose lease ran out"
            claim._id = owner_id
            claim._start()
            return claim
        raise StoreBusy(f"{url}: its claim object keeps changing; another run is starting.")

    def _start(self) -> None:
        self._fd = True  # type: ignore[assignment]
        self._renewer = threading.Thread(target=self._renew, name="mote-claim-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        """Rewrite the record every third of the lease while held; stop if it was taken."""
        while not self._stop.wait(self.lease / 3):
            body = _record(self.owner, self._id, self.lease)
            try:
                etag = self._obj.put(body, IfMatch=self._etag)
            except StoreError:
                continue  # the endpoint hiccupped: try again before the lease ends
            if etag is None:
                self.lost = True
                return
            self._etag = etag

    @property
    def held(self) -> bool:
        return self._fd is not None and not self.lost

    @property
    def token(self) -> str:
        """What names this holding of the claim for its dask workers (``check_token``)."""
        return self._id

    def check(self, path: str | Any) -> None:
        """Fail unless this claim is held and is on ``path``."""
        if self.lost:
            raise StoreBusy(
                f"{self.path}: another run took this store's claim over (our lease of "
                f"{self.lease:g} s ran out); stop and rerun once it has ended."
            )
        if not self.held or str(path).rstrip("/") != self.path:
            raise StoreError(f"{path}: this needs the store's claim, and {self!r} is not it.")

    def release(self) -> None:
        """Stop renewing and delete the claim object when it is still ours (idempotent)."""
        if self._fd is None:
            return
        self._fd = None
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost:
            with contextlib.suppress(StoreError, OSError):
                self._obj.delete(self._etag)


def _record(owner: ClaimOwner, owner_id: str, lease: float) -> bytes:
    fields = json.loads(owner.to_json())
    fields.update(owner_id=owner_id, lease_seconds=lease, lease_until=time.time() + lease)
    return (json.dumps(fields, indent=2) + "\n").encode()


def _ended(owner: ClaimOwner, raw: dict) -> bool:
    """Whether the recorded owner can no longer be writing: its lease ran out, or it is a
    process of this host that is gone (no need to wait out its lease)."""
    if owner.on_this_host() and not owner.alive():
        return True
    if owner.on_this_host() and owner.pid == os.getpid():
        return True  # this process's own earlier claim, as the local claim allows
    try:
        return time.time() > float(raw["lease_until"])
    except (KeyError, TypeError, ValueError):
        return False  # no lease: refuse rather than guess


def check_token(url: str, token: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail unless the claim object of the store at ``url`` is still the holding ``token``
    names: a dask worker asks before it writes a chunk for its driver, so a driver that was
    killed, or whose claim another run took over, gets no more chunks written in its name."""
    found = _Object(Url(str(url).rstrip("/")), storage_options).read()
    holder = found[1].get("owner_id") if found is not None else None
    if holder != token:
        who = found[0].describe() if found is not None and found[0] is not None else "nobody"
        raise StoreBusy(
            f"{url}: not writing this chunk: the run that sent it no longer holds the store's "
            f"claim (now held by {who}); the run that holds it redoes the chunk."
        )


def claim_location(
    location: Any,
    storage_options: dict[str, Any] | None = None,
    lease: float = LEASE_SECONDS,
    local: type[StoreClaim] = StoreClaim,
) -> StoreClaim:
    """The claim on a store wherever it is: a folder's lock (``local``, a ``StoreClaim`` class
    such as the embeddings file's), or a URL's claim object, named in messages as ``local``
    names its folder."""
    location = locate(location)
    if isinstance(location, Url):
        return RemoteClaim.acquire(location, storage_options, lease, local.KIND)
    return local.acquire(location)


def refuse_if_claimed_at(location: Any, storage_options: dict[str, Any] | None = None) -> None:
    """``refuse_if_claimed`` for a folder or a URL: StoreBusy while a live claim is held."""
    location = locate(location)
    if not isinstance(location, Url):
        refuse_if_claimed(location)
        return
    found = _Object(location, storage_options).read()
    if found is not None and found[0] is not None and not _ended(found[0], found[1]):
        if found[0].on_this_host() and found[0].pid == os.getpid():
            return
        raise _busy(location, found[0])  # type: ignore[arg-type]


def check_claim_at(
    location: Any, claim: StoreClaim | None, storage_options: dict[str, Any] | None = None
) -> None:
    """Before writing at ``location``: the caller's ``claim`` must be on it; without one, no
    live run may hold its claim (writers that claim nothing: tests, benchmarks)."""
    if claim is None:
        refuse_if_claimed_at(location, storage_options)
    else:
        claim.check(location)
