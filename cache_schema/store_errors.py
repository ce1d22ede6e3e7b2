"""Errors of the feature store; each also subclasses the builtin a caller would naturally catch.

Messages name the store path, what was found, what was asked for and the fix, because the CLI
prints them as one line.
"""

from mote.pipeline.errors import short_error
from mote.pipeline.exit_codes import DAMAGE, USAGE

__all__ = [
    "StoreError",
    "StoreMismatch",
    "StoreNotFound",
    "StoreCorrupt",
    "UnlabelledStore",
    "short_error",
]


class StoreError(ValueError):
    """Base of every error the feature store raises on purpose."""

    exit_code = USAGE  # the CLI's exit code: the store or the request is not usable as given


class StoreMismatch(StoreError):
    """The store exists but holds something other than what the command asked for."""


class UnlabelledStore(StoreMismatch):
    """A command that needs classes (training, accuracy, the class text bank) was given a store
    extracted without them."""


class StoreNotFound(StoreError, FileNotFoundError):
    """There is no feature store at the given path."""


class StoreCorrupt(StoreError):
    """The store is missing arrays or their shapes disagree with its attributes."""

    exit_code = DAMAGE
