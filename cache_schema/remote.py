"""A store's files on object storage (s3://, gs://), read through fsspec.

``StoreReader`` checks files by path (``zarr.json`` present, a chunk file deleted); for a store
at a URL, ``RemoteFiles`` answers the same few ``pathlib`` calls (``/``, ``is_file``, ``exists``,
``read_text``, ``name``) from one listing of the store taken when it is opened, so a check is a
set lookup, not a request: a store opened to read is not written while it is open.

A store opened to write (under its claim, ``remote_claim.py``) changes as it is written, so
``LiveFiles`` asks the object store each time instead, and adds the few writing calls the store
folder's code uses (``write_text``, ``iterdir``, ``unlink``, ``remove_tree``). Object stores have
no rename; a single PUT is atomic, so ``write_text`` replaces a file whole where a folder uses a
temporary file and a rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mote.cache_schema.store_errors import StoreError, StoreNotFound, short_error
from mote.pipeline.locations import Url, filesystem


class RemoteFiles:
    """One key under a store's URL; ``/`` goes deeper, as a ``Path`` does."""

    def __init__(self, url: str, fs: Any, key: str, sizes: dict[str, int]) -> None:
        self.url, self._fs, self.key, self._sizes = url, fs, key, sizes

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None) -> RemoteFiles:
        """List the store at ``url``; one line naming the URL when it cannot be reached."""
        fs, key = filesystem(url, storage_options)
        try:
            found = fs.find(key, detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as err:  # botocore and aiohttp raise many types
            raise StoreError(
                f"{url}: cannot list the store ({short_error(err, 160)}); check the URL, the "
                "credentials (AWS_* environment or --storage-options) and the endpoint."
            ) from None
        sizes = {str(path): int(info.get("size") or 0) for path, info in found.items()}
        if not sizes:
            raise StoreNotFound(
                f"{url}: nothing there (no such bucket or key, or no access to it); check the "
                "URL, the credentials (AWS_* environment or --storage-options) and the endpoint."
            )
        return cls(url, fs, key, sizes)

    def __truediv__(self, part: str) -> RemoteFiles:
        return type(self)(f"{self.url}/{part}", self._fs, f"{self.key}/{part}", self._sizes)

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def is_file(self) -> bool:
        return self.key in self._sizes

    def exists(self) -> bool:
        prefix = self.key + "/"
        return self.is_file() or any(path.startswith(prefix) for path in self._sizes)

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def read_bytes(self) -> bytes:
        try:
            return self._fs.cat_file(self.key)
        except FileNotFoundError as err:
            raise FileNotFoundError(2, "No such file or directory", self.url) from err

    def total_bytes(self) -> int:
        """The size of every object under this key."""
        prefix = self.key + "/"
        return sum(size for path, size in self._sizes.items() if path.startswith(prefix))


class LiveFiles(RemoteFiles):
    """A store's files at a URL while it is written: every question goes to the object store."""

    @classmethod
    def at(cls, url: str, storage_options: dict[str, Any] | None) -> LiveFiles:
        fs, key = filesystem(url, storage_options)
        return cls(url, fs, key, {})

    def _fresh(self) -> Any:
        self._fs.invalidate_cache()  # zarr writes through the same (cached) file system
        return self._fs

    def _kind(self) -> str | None:
        """'file', 'directory' or None when nothing is there. An unreachable server raises:
        fsspec's ``isfile`` answers False to any error, which would call an outage a deleted
        file (damage, and ``--repair``)."""
        try:
            return self._fresh().info(self.key)["type"]
        except FileNotFoundError:
            return None

    def is_file(self) -> bool:
        return self._kind() == "file"

    def is_dir(self) -> bool:
        return self._kind() == "directory"

    def is_symlink(self) -> bool:
        return False

    def exists(self) -> bool:
        return self._fresh().exists(self.key)

    def iterdir(self) -> list[LiveFiles]:
        try:
            names = self._fresh().ls(self.key, detail=False)
        except FileNotFoundError:
            return []
        return [self / str(name).rstrip("/").rsplit("/", 1)[-1] for name in names]

    def write_text(self, text: str) -> None:
        """Replace the file whole: one PUT, which an object store applies atomically."""
        self.write_bytes(text.encode())

    def write_bytes(self, data: bytes) -> None:
        """Replace the file whole with ``data`` in one PUT (see ``write_text``)."""
        self._fs.pipe_file(self.key, data)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        self._fs.rm(self.key, recursive=True)

    def mkdir(self, *args: Any, **kwargs: Any) -> None:
        """Object stores have no folders: a key's prefix exists once a file is under it."""

    def rglob(self, pattern: str) -> list[LiveFiles]:
        suffix = pattern.lstrip("*")
        found = self._fresh().find(self.key)
        return [
            LiveFiles(f"{self.url}{p[len(self.key) :]}", self._fs, p, {})
            for p in found
            if str(p).endswith(suffix)
        ]

    def total_bytes(self) -> int:
        return int(self._fresh().du(self.key, total=True))


def files_at(
    location: Path | Url, storage_options: dict[str, Any] | None, live: bool
) -> Path | RemoteFiles:
    """What a folder's files are looked at through: the folder itself, or for a URL its
    objects, asked afresh each time while it is written (``live``) or from one listing."""
    if not isinstance(location, Url):
        return location
    return (LiveFiles.at if live else RemoteFiles.open)(location, storage_options)


def total_bytes(files: Path | RemoteFiles) -> int:
    """The size of every file under a folder, or of every object under a URL."""
    if isinstance(files, RemoteFiles):
        return files.total_bytes()
    return sum(p.stat().st_size for p in files.rglob("*") if p.is_file())
