"""``mote info``: what a feature store holds and which videos failed, no model needed."""

from __future__ import annotations

from pathlib import Path

from mote.cache_schema.store import FeatureStore


def run(store: Path) -> dict:
    """The store's summary (the keys of ``mote info --json``)."""
    return FeatureStore.open(store).summary()
