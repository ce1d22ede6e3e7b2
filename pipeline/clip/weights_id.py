"""The identity of a weights file: what stores and runs record to tell CLIP weights apart.

Kept apart from ``weights.py`` (which imports open_clip) so that reading a run's records, such
as the identity a tuned run's stores must carry, loads no model code.
"""

from __future__ import annotations

import hashlib
import os


def file_weights_id(path: str | os.PathLike[str]) -> str:
    """``sha256:<first 16 hex digits>`` of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"
