"""Array metadata files deleted from a store, and their restore from the consolidated copy.

The root ``zarr.json`` holds a copy of every array's own ``zarr.json`` (consolidated metadata),
which readers use. A deleted array file can be written back from that copy; a file that is
broken, or differs from its copy, is refused instead, since readers would not see it as it is.
``path`` is the store folder, or a ``LiveFiles`` for a store at a URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from mote.cache_schema import v1
from mote.cache_schema.store_errors import StoreCorrupt


def array_metadata_missing(path: Path) -> list[str]:
    """The v1 arrays whose own zarr.json is deleted but held in the consolidated metadata.

    Raises StoreCorrupt naming the file when one is unreadable, differs from its consolidated
    copy (readers use the copy, so consolidating it would change what they read), or is deleted
    with no copy to restore it from.
    """
    root = path / "zarr.json"
    try:
        held = json.loads(root.read_text())["consolidated_metadata"]["metadata"]
        if not isinstance(held, dict):
            held = {}
    except (OSError, ValueError, KeyError, TypeError):
        held = {}
    missing = []
    for name in v1.ARRAYS:
        file = path / name / "zarr.json"
        copy = held.get(name)
        if not file.exists():
            if copy is None:
                raise StoreCorrupt(
                    f"{file}: missing, and {root} holds no copy of it; re-run "
                    f"`mote extract ... --out {path} --overwrite`."
                )
            missing.append(name)
            continue
        fix = (
            f"delete it and rerun `mote extract` to restore it from the consolidated metadata in "
            f"{root}, or re-run `mote extract ... --out {path} --overwrite`"
            if copy is not None
            else f"re-run `mote extract ... --out {path} --overwrite`"
        )
        try:
            own = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or f"not valid JSON: {err}"
            raise StoreCorrupt(f"{file}: unreadable array metadata ({reason}); {fix}.") from None
        if copy is not None and own != copy:
            raise StoreCorrupt(
                f"{file}: differs from its consolidated copy in {root} that readers use; {fix}."
            )
    return missing


def needs_consolidation(path: Path) -> bool:
    """Whether the root's consolidated metadata is missing, or differs from an array's own.

    A missing array file counts as "differs": its restore is a change to write.
    """
    try:
        held = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    for name in v1.ARRAYS:
        try:
            own = json.loads((path / name / "zarr.json").read_text())
        except (OSError, ValueError):
            return True
        if held.get(name) != own:
            return True
    return False


def restore_array_metadata(path: Path, names: Sequence[str]) -> None:
    """Write each named array's zarr.json back from the consolidated copy in the root."""
    if not names:
        return
    held = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    for name in names:
        text = json.dumps(held[name], indent=2)
        file = path / name / "zarr.json"
        if not isinstance(file, Path):
            file.write_text(text)  # object storage: one PUT replaces the file atomically
            continue
        file.parent.mkdir(exist_ok=True)
        partial = file.with_name(f"zarr.json.{os.getpid()}.partial")
        partial.write_text(text)
        partial.replace(file)
