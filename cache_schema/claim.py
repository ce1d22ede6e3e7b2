"""One writer per store: a claim file in the store folder, held under an fcntl lock.

``mote extract`` claims a store before it writes anything (creating, resuming, overwriting,
cleaning up ``.partial`` files) and releases it when it ends, however it ends. The claim file
``STORE/.mote-claim.json`` names its owner (host, pid, the process's start time, since when, the
command line), so a refused run can say who is writing. The lock dies with its process, and a
record whose process is gone (same host; a reused pid is told apart by its start time) is taken
over with a notice. Zarr and every mote reader ignore the file (it is no Zarr node), and it is
deleted on release, so finished stores stay byte-identical. dask workers write chunks under
their driver's claim and never claim themselves.

The run that writes takes the claim (``StoreClaim.acquire`` in ``stages/extract.py``) and hands
it to ``FeatureStore``, which only checks it; writers that hold none (tests, benchmarks) call
``refuse_if_claimed`` through the store, so they never write under a live run's claim.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mote.cache_schema.store_errors import StoreError

CLAIM_FILE = ".mote-claim.json"


class StoreBusy(StoreError):
    """Another live process holds the store's claim."""


class StoreReadOnly(StoreError, PermissionError):
    """The store folder cannot be written, so it cannot be claimed."""


def _boot_id() -> str:
    """This boot of the machine (Linux), so a record from before a reboot is known stale."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _command_line() -> str:
    """This process's command line as a user would type it (``mote extract ...``)."""
    argv = list(sys.argv) or ["?"]
    name = Path(argv[0]).name
    if name in ("__main__.py", "cli.py", "mote"):
        name = "mote"
    return " ".join([name, *(shlex.quote(a) for a in argv[1:])])


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds (or held) a claim: what the claim file records."""

    host: str
    pid: int
    process_start: int | None  # clock ticks since boot; tells a reused pid from the owner
    boot_id: str
    since: str  # local time with offset, ISO 8601, seconds
    command: str

    @classmethod
    def me(cls) -> ClaimOwner:
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            process_start=_process_start(pid),
            boot_id=_boot_id(),
            since=datetime.now().astimezone().isoformat(timespec="seconds"),
            command=_command_line(),
        )

    @classmethod
    def parse(cls, text: str) -> ClaimOwner | None:
        """The owner a claim file names, or None when it is empty or not a claim record."""
        try:
            data: Any = json.loads(text)
            start = data.get("process_start")
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                process_start=None if start is None else int(start),
                boot_id=str(data.get("boot_id", "")),
                since=str(data.get("since", "?")),
                command=str(data.get("command", "?")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def describe(self) -> str:
        """One-line description for messages: pid, host, since, command."""
        command = self.command if len(self.command) <= 160 else self.command[:157] + "..."
        return f"pid {self.pid} on host {self.host} since {self.since}, command: {command}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether the recorded process still runs (meaningful only on its own host)."""
        if self.boot_id and _boot_id() and self.boot_id != _boot_id():
            return False  # the machine rebooted since
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists but belongs to another user
        if self.process_start is not None:
            now = _process_start(self.pid)
            if now is not None and now != self.process_start:
                return False  # the pid was reused by another process
        return True


def _read_owner(fd: int) -> ClaimOwner | None:
    data = os.pread(fd, 65536, 0)
    return ClaimOwner.parse(data.decode("utf-8", errors="replace"))


def _busy(path: Path, owner: ClaimOwner | None, kind: str = "store") -> StoreBusy:
    if owner is None:
        who = "another process (its claim record is not written yet)"
    else:
        who = f"another run ({owner.describe()})"
    return StoreBusy(
        f"{path}: {who} is writing this {kind}; wait for it to end or stop it, then rerun."
    )


def _other_host(path: Path, owner: ClaimOwner) -> StoreBusy:
    return StoreBusy(
        f"{path}: claimed by a run on another host ({owner.describe()}); if that run has ended, "
        f"delete {path / CLAIM_FILE} and rerun."
    )


def _read_only(path: Path, err: OSError, kind: str = "store") -> StoreReadOnly:
    return StoreReadOnly(
        f"{path}: cannot claim the {kind} for writing ({err.strerror or err}); make the folder "
        "writable, or choose another --out."
    )


def live_owner(path: str | Path, others_only: bool = False) -> ClaimOwner | None:
    """The owner of the claim on ``path`` when a process may still hold it (alive on this
    host, or on another host where mote cannot tell); None when nobody does, or when
    ``others_only`` and this process holds it."""
    try:
        owner = ClaimOwner.parse((Path(path) / CLAIM_FILE).read_text())
    except OSError:
        return None  # no claim file: nobody holds the folder
    if owner is None or (others_only and owner.on_this_host() and owner.pid == os.getpid()):
        return None
    return owner if not owner.on_this_host() or owner.alive() else None


def refuse_if_claimed(path: str | Path) -> None:
    """Raise StoreBusy naming the owner when a live process holds the claim on ``path``.

    For writers that hold no claim (tests and benchmarks building stores in folders of their
    own): they take none, so they only look at the claim file, and never write under a run's.
    A record whose process is gone is left alone; one from another host is refused, as
    ``StoreClaim.acquire`` does.
    """
    owner = live_owner(path)
    if owner is None:
        return
    if not owner.on_this_host():
        raise _other_host(Path(path), owner)
    raise _busy(Path(path), owner)


class StoreClaim:
    """The claim on one store folder; get it with ``StoreClaim.acquire``, release it once.

    ``KIND`` names what the folder is in messages: a subclass claims run folders the same way
    (``pipeline/runs/run_folder.py``)."""

    KIND = "store"
    gone = "a run that is gone"  # how a takeover notice names the owner it replaced

    def __init__(
        self, path: Path, fd: int, owner: ClaimOwner, made_folder: bool, taken_over
    ) -> None:
        self.path = path
        self.file = path / CLAIM_FILE
        self.owner = owner
        self.taken_over: ClaimOwner | None = taken_over  # a gone owner this claim replaced
        self._fd: int | None = fd
        self._made_folder = made_folder

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"{type(self).__name__}({str(self.path)!r}, {state})"

    @classmethod
    def acquire(cls, path: str | Path) -> StoreClaim:
        """Claim ``path`` (creating the folder if needed) or raise StoreBusy naming the owner."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise StoreError(
                f"{path}: exists and is a file, not a {cls.KIND} folder; choose another --out."
            )
        made_folder = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(
                f"{path}: exists and is a file, not a {cls.KIND} folder; choose another --out."
            ) from None
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise _read_only(path, err, cls.KIND) from err
            raise
        try:
            return cls._lock(path, made_folder)
        except BaseException:
            if made_folder:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    @classmethod
    def _lock(cls, path: Path, made_folder: bool) -> StoreClaim:
        file = path / CLAIM_FILE
        for _ in range(100):  # retried only while a releasing owner deletes the file under us
            try:
                fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise _read_only(path, err, cls.KIND) from err
                raise
            try:
                claim = cls._take(path, file, fd, made_folder)
            except BaseException:
                os.close(fd)
                raise
            if claim is not None:
                return claim
            os.close(fd)
        raise StoreBusy(f"{path}: its claim file {file} keeps changing; another run is starting.")

    @classmethod
    def _take(cls, path: Path, file: Path, fd: int, made_folder: bool) -> StoreClaim | None:
        """Lock the open claim file and write our record; None when the file was replaced."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(path, _read_owner(fd), cls.KIND) from None
        try:
            now = os.stat(file)
        except FileNotFoundError:
            return None  # its owner released (deleted) it after we opened it
        mine = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            return None
        old = _read_owner(fd)
        taken_over = None
        if old is not None:
            if not old.on_this_host():
                raise _other_host(path, old)
            if old.alive() and old.pid != os.getpid():
                raise _busy(path, old, cls.KIND)
            taken_over = old
        owner = ClaimOwner.me()
        data = owner.to_json().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return cls(path, fd, owner, made_folder, taken_over)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check(self, path: str | Path) -> None:
        """Fail unless this claim is held and is on ``path``: for code that needs the claim."""
        if not self.held or Path(path).resolve() != self.path.resolve():
            raise StoreError(f"{path}: this needs the {self.KIND}'s claim, and {self!r} is not it.")

    def release(self) -> None:
        """Delete the claim file, then unlock (idempotent); also drop a folder we made empty."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                now, mine = os.stat(self.file), os.fstat(fd)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    self.file.unlink()
        finally:
            os.close(fd)
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only succeeds when nothing was written

    def __enter__(self) -> StoreClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
