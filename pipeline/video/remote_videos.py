"""Videos on object storage (``s3://bucket/videos/x.mp4``): a bounded local spill per decoder.

decord needs a file name, and the truncation checks of ``decode.py`` read box sizes against the
file's length, so a remote video is downloaded whole to a temporary file, decoded there exactly
as a local file is (the same checks, the same failure reasons) and deleted when its source is
closed. Ranged reads through a file object would spare the disk but not the bytes: decoding a
clip reads the whole stream in order (``_decode_sequential`` never seeks), and decord cannot
read a file object at all.

The spill goes to ``$MOTE_SPILL_DIR`` (a decode worker's own folder, which its pool removes
when the worker ends, even one killed by its timeout), else the system temp folder. A worker
decodes one video at a time, so the disk a run uses for spills is at most the number of decode
workers times the largest video.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mote.pipeline.errors import (
    ConfigError,
    DecodeError,
    Unreachable,
    network_failure,
    short_error,
    unreachable_message,
)
from mote.pipeline.locations import filesystem

SPILL_DIR_ENV = "MOTE_SPILL_DIR"
SPILL_PREFIX = "mote-spill-"


def spill_dir() -> str | None:
    """Where this process spills remote videos (None: the system temp folder)."""
    return os.environ.get(SPILL_DIR_ENV) or None


def download(url: str, options: dict[str, Any] | None) -> Path:
    """Copy the object at ``url`` to a new temporary file; its path (the caller deletes it).

    A missing object fails as a missing local file does ("file not found"); the bytes of a cut
    or damaged object are left for the local checks to name. One GET per video: whether a
    missing key is a prefix of other objects is asked only once the GET has failed (an up-front
    HEAD doubled the requests per video, bench/s3.py).
    """
    fs, key = filesystem(url, options)
    suffix = Path(key).suffix
    handle, name = tempfile.mkstemp(prefix=SPILL_PREFIX, suffix=suffix, dir=spill_dir())
    os.close(handle)
    local = Path(name)
    try:
        fs.get_file(key, str(local))
    except FileNotFoundError:
        local.unlink(missing_ok=True)
        raise DecodeError(missing_reason(fs, key)) from None
    except Exception as err:  # botocore and aiohttp raise many types
        local.unlink(missing_ok=True)
        if network_failure(err) is not None:  # an outage stops the run: the video is fine
            raise Unreachable(unreachable_message(err)) from err
        raise DecodeError(f"cannot read the object ({short_error(err, 160)})") from None
    return local


def missing_reason(fs: Any, key: str) -> str:
    """Why ``key`` has no object to GET: a prefix of other objects, or nothing at all."""
    try:
        prefix = fs.isdir(key)
    except Exception:  # noqa: BLE001 - the GET already failed: say what it said
        prefix = False
    return "not a regular file (a prefix holding other objects)" if prefix else "file not found"


class SpilledVideo:
    """A remote video's local source and its spill file, deleted with ``close``."""

    def __init__(self, url: str, source: Any, local: Path) -> None:
        self.path, self._source, self._local = url, source, local
        self.num_frames = source.num_frames

    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        return self._source.get(indices)

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            self._local.unlink(missing_ok=True)

    def __enter__(self) -> SpilledVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_remote(url: str, opener: Any, options: dict[str, Any] | None) -> SpilledVideo:
    """Spill ``url`` and open it with ``opener(local_path)``; the spill is gone if that fails."""
    local = download(url, options)
    try:
        return SpilledVideo(url, opener(local), local)
    except BaseException:
        local.unlink(missing_ok=True)
        raise


def check_prefix(url: str, options: dict[str, Any] | None, flag: str) -> None:
    """Refuse, in one line, a video root URL that holds nothing (or cannot be reached)."""
    fs, key = filesystem(url, options)
    try:
        found = fs.ls(key, detail=False)
    except FileNotFoundError:
        found = []
    except Exception as err:  # botocore and aiohttp raise many types
        raise ConfigError(
            f"{flag} {url}: cannot list it ({short_error(err, 160)}); check the URL, the "
            "credentials (AWS_* environment or --storage-options) and the endpoint"
        ) from None
    if not found:
        raise ConfigError(
            f"{flag} {url}: no objects under this prefix (or no access to it); check the URL, "
            "the credentials (AWS_* environment or --storage-options) and the endpoint"
        )


def list_prefix(url: str, options: dict[str, Any] | None) -> set[str]:
    """The keys under a URL prefix, relative to it (``class/x.mp4``): one listing, for finding
    which of a dataset's videos exist."""
    fs, key = filesystem(url, options)
    base = key + "/"
    try:
        found = fs.find(key, withdirs=False, detail=False)
    except FileNotFoundError:
        return set()
    return {str(path)[len(base) :] for path in found if str(path).startswith(base)}


def videos_under(
    url: str, recursive: bool, extensions: tuple[str, ...], options: dict[str, Any] | None
) -> list[str] | None:
    """The video objects under a URL prefix (sorted; deeper ones with ``recursive``), as URLs;
    None when ``url`` names one object or nothing (a missing one then fails as "file not
    found" when decoded, as a missing local file does)."""
    fs, key = filesystem(url, options)
    try:
        if fs.isfile(key) or not fs.isdir(key):
            return None
        found = fs.find(key, withdirs=False) if recursive else fs.ls(key, detail=False)
    except FileNotFoundError:
        return None
    base, prefix = url.rstrip("/"), key + "/"
    keys = [str(k) for k in found if str(k).startswith(prefix)]
    keys = [k for k in keys if Path(k).suffix.lower() in extensions and fs.isfile(k)]
    return [f"{base}/{k[len(prefix) :]}" for k in sorted(keys)]
