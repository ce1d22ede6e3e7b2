"""Where a command reads or writes: a local ``Path`` or a ``Url`` on object storage.

Every path a user gives (a flag, a ``--config`` key, a Python keyword) goes through
``locate``, so ``s3://bucket/s.zarr`` is never taken for a relative folder named ``s3:``.
``file://`` URLs become local paths. A field reads URLs only where its metadata says so
(``url="read"``: feature stores and embeddings files that commands read through fsspec;
``url="store"``: a store or embeddings file written to s3:// under its claim); anywhere else
``check_location`` refuses one in one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mote.pipeline.errors import ConfigError, short_error

# A scheme of two or more letters, so a Windows drive (C:\...) is never a URL.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")
READS_URLS = (
    "--store, --train, --val, --test, --text-from, --embeddings and `mote info` (feature stores "
    "and embeddings files they read), `mote extract --out` and `mote embed --out` (files they "
    "write to s3://), and the videos of `extract --root`, `finetune-e2e --root/--val-root`, "
    "`info --root` and `predict`"
)
# The fsspec package each scheme needs, and the extra that brings it.
PACKAGES = {"s3": ("s3fs", "pip install 'mote[s3]'"), "gs": ("gcsfs", "pip install gcsfs")}


class Url(str):
    """A location on object storage (``s3://bucket/key``), read through fsspec."""

    @property
    def scheme(self) -> str:
        return urlsplit(self).scheme

    @property
    def name(self) -> str:
        """The last part of the key, as ``Path.name`` gives it."""
        return self.rstrip("/").rsplit("/", 1)[-1]


def url_scheme(text: str) -> str | None:
    """The scheme of ``text`` when it is a URL (``s3``, ``file``), else None."""
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else None


def locate(value: Any) -> Path | Url:
    """A user's path as a local ``Path`` (``~`` expanded, ``file://`` unwrapped) or a ``Url``."""
    if isinstance(value, Url):
        return value
    if isinstance(value, Path):
        return value.expanduser()
    text = str(value)
    scheme = url_scheme(text)
    if scheme is None:
        return Path(text).expanduser()
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{text}: a file:// URL names a host; use file:///absolute/path")
        return Path(unquote(parts.path))
    return Url(text)


def resolved(location: Path | Url | str) -> str:
    """A location as records compare it: a local path made absolute, a URL as given."""
    location = locate(location)
    return location if isinstance(location, Url) else str(location.resolve())


def check_location(location: Path | Url, flag: str, urls: str | None) -> None:
    """Refuse a URL where the option cannot use one yet (``urls``: the field's ``url`` metadata:
    "read" takes URLs, "store" a store written to s3:// by one process under its claim,
    "write" a file that cannot be written to a URL yet, None a local file or folder)."""
    if not isinstance(location, Url) or urls == "read":
        return
    if urls == "store" and location.scheme == "s3":  # its claim needs S3's conditional writes
        return
    if urls in ("write", "store"):
        raise ConfigError(
            f"{flag} {location}: writing a store to {location.scheme}:// is not supported yet; "
            "write locally and upload with `aws s3 sync` (README: Stores on object storage; "
            "`mote extract --out` writes s3:// stores)"
        )
    raise ConfigError(
        f"{flag} {location}: takes a local path, not a URL; only {READS_URLS} take URLs yet"
    )


def storage_options(value: Any, flag: str = "--storage-options") -> dict[str, Any] | None:
    """``--storage-options`` as a dict for fsspec: JSON text (a flag) or a mapping (a config
    file or a Python call); None when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ConfigError(
                f"{flag} {value!r}: not JSON ({error}); pass an object such as "
                '\'{"anon": true}\' or \'{"client_kwargs": {"region_name": "eu-west-1"}}\''
            ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag}: must be a JSON object of fsspec options, got {value!r}")
    return value


def join(root: Path | Url | str, relative: str) -> str:
    """``root/relative`` as text: a URL joined with ``/`` (never through ``Path``, which would
    fold ``s3://`` into ``s3:/``), a local path through ``Path``."""
    if isinstance(root, Url) or url_scheme(str(root)):
        return f"{str(root).rstrip('/')}/{relative.lstrip('/')}"
    return str(Path(root) / relative)


def filesystem(url: str, options: dict[str, Any] | None, use: str = "reading") -> tuple[Any, str]:
    """The fsspec file system of ``url`` and its key (no trailing ``/``); one line naming the URL
    and, when its backend is missing, the package to install for ``use`` (reading, writing)."""
    import fsspec

    scheme = url_scheme(url) or "file"
    try:
        fs, key = fsspec.core.url_to_fs(url, **(options or {}))
    except ImportError:
        package, fix = PACKAGES.get(scheme, ("its fsspec backend", f"install {scheme}fs"))
        raise ConfigError(f"{url}: {use} {scheme}:// needs {package}; {fix}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"{url}: cannot open this URL ({short_error(err)}); check the scheme and "
            "--storage-options"
        ) from None
    return fs, key.rstrip("/")
