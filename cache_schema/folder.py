"""The store folder before a store is in it: interrupted creations, clearing, foreign files.

mote deletes only what a mote store holds. ``clear_target`` makes room for a new store under the
caller's claim: an interrupted creation is cleared without ``--overwrite`` (nothing in it is
valid), a finished store only with it, and a folder holding anything else is never touched.
``path`` is a local ``Path`` or, for a store at a URL, a ``LiveFiles`` answering the same calls.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mote.cache_schema import v1
from mote.cache_schema.claim import CLAIM_FILE
from mote.cache_schema.store_errors import StoreError, StoreNotFound
from mote.pipeline.locations import Url

METADATA_FILE = "zarr.json"  # a Zarr v3 node's metadata: the store's root, and each array's own


def is_store(path: Any) -> bool:
    """Whether ``path`` (a ``Path``, or a ``RemoteFiles``/``LiveFiles`` for a URL) holds a Zarr
    group: a store, or its creation begun; a folder without it is no store at all."""
    return (path / METADATA_FILE).is_file()


def refuse_no_store(path: Any, files: Any, run_folder: bool) -> None:
    """A ``StoreNotFound`` with the way out when ``files`` (at ``path``) holds no store:
    ``run_folder`` says the folder is a run (``pipeline/runs/layout.is_run_folder``)."""
    if is_store(files):
        return
    if run_folder:
        raise StoreNotFound(
            f"{path}: a run folder, not a feature store; pass a store (`mote extract ... "
            f"--out STORE`), or read the run with `mote report {path}`."
        )
    if isinstance(path, Url):
        raise StoreNotFound(
            f"{path}: no feature store here (no zarr.json); extract one locally and upload "
            "the whole store folder (`aws s3 sync STORE URL`)."
        )
    raise StoreNotFound(
        f"{path}: no feature store here (no zarr.json); create one with "
        f"`mote extract ... --out {path}`."
    )


def creation_interrupted(path: Path) -> bool:
    """Whether ``path`` is a mote store whose creation never finished, so nothing in it is valid.

    ``FeatureStore.create`` writes an attribute-less root group, then the v1 arrays, then every
    root attribute at once; a folder with that root and nothing but v1 arrays (and temporary
    files) is one.
    """
    try:
        root = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(root, dict) or root.get("node_type") != "group" or root.get("attributes"):
        return False
    for entry in path.iterdir():
        if entry.name in v1.ARRAYS:
            if not entry.is_dir():
                return False
        elif entry.name not in (METADATA_FILE, CLAIM_FILE) and not entry.name.endswith(".partial"):
            return False
    return True


def foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that a mote store of this or another schema version would not hold."""
    try:
        attrs = json.loads((path / METADATA_FILE).read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        attrs = {}
    if isinstance(attrs, dict) and attrs.get("schema") == v1.SCHEMA:
        return []  # a mote store, maybe of another version: its layout is its own
    known = {*v1.ARRAYS, METADATA_FILE, CLAIM_FILE}
    return sorted(
        e.name for e in path.iterdir() if e.name not in known and not e.name.endswith(".partial")
    )


def empty_folder(path: Path) -> None:
    """Delete everything in ``path`` but the claim file (the caller holds that claim)."""
    for entry in path.iterdir():
        if entry.name == CLAIM_FILE:
            continue
        if not isinstance(entry, Path):
            entry.remove_tree()  # a key on object storage: everything under it
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def clear_target(path: Path, overwrite: bool) -> None:
    """Make room for a new store at ``path``, deleting only a mote store (see the module doc)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise StoreError(f"{path}: exists and is a file, not a store folder; choose another --out.")
    if not any(entry.name != CLAIM_FILE for entry in path.iterdir()):
        return
    if creation_interrupted(path):
        empty_folder(path)
        return
    if not is_store(path):
        raise StoreError(
            f"{path}: exists and is not a Zarr store (no zarr.json), so mote will not write or "
            "delete anything there; choose another --out."
        )
    if not overwrite:
        raise StoreError(
            f"{path}: already exists; pass --overwrite to replace it or choose another --out."
        )
    foreign = foreign_entries(path)
    if foreign:
        raise StoreError(
            f"{path}: holds {foreign[0]!r}, which is no part of a mote feature store, so "
            "--overwrite will not delete it; choose another --out."
        )
    empty_folder(path)


def remove_partial_files(path: Path) -> int:
    """Delete the temporary chunk files (``*.partial``) under ``path``; how many there were."""
    leftovers = list(path.rglob("*.partial"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)
