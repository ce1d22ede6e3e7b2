"""A store's files on object storage (s3://, gs://), read through fsspec.

``StoreReader`` checks files by path (``zarr.json`` present, a chunk file deleted); for a store
at a URL, ``RemoteFiles`` answers the same few ``pathlib`` calls (``/``, ``is_file``, ``exists``,
``read_text``, ``name``) from one listing of the store taken when it is opened, so a check is a
set lookup, not a request. Stores at URLs are read-only (writing needs a claim that works
across machines), so the listing stays true while the store is open.
"""

from __future__ import annotations

from typing import Any

from mote.cache_schema.errors import StoreError, StoreNotFound, short_error
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import PACKAGES


class RemoteFiles:
    """One key under a store's URL; ``/`` goes deeper, as a ``Path`` does."""

    def __init__(self, url: str, fs: Any, key: str, sizes: dict[str, int]) -> None:
        self.url, self._fs, self.key, self._sizes = url, fs, key, sizes

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None) -> RemoteFiles:
        """List the store at ``url``; one line naming the URL when it cannot be reached."""
        import fsspec

        scheme = url.split("://", 1)[0]
        try:
            fs, key = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except ImportError:
            package, fix = PACKAGES.get(scheme, ("its fsspec backend", f"install {scheme}fs"))
            raise ConfigError(f"{url}: reading {scheme}:// needs {package}; {fix}") from None
        except (ValueError, TypeError) as err:
            raise ConfigError(
                f"{url}: cannot open this URL ({short_error(err)}); check the scheme and "
                "--storage-options"
            ) from None
        key = key.rstrip("/")
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
        return RemoteFiles(f"{self.url}/{part}", self._fs, f"{self.key}/{part}", self._sizes)

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
        try:
            return self._fs.cat_file(self.key).decode()
        except FileNotFoundError as err:
            raise FileNotFoundError(2, "No such file or directory", self.url) from err

    def total_bytes(self) -> int:
        """The size of every object under this key."""
        prefix = self.key + "/"
        return sum(size for path, size in self._sizes.items() if path.startswith(prefix))
