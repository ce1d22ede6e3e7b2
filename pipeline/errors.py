"""mote's error types: each also subclasses the builtin a caller would naturally catch.

The CLI prints the message of a ``MoteError`` (or a store error) as one line and exits non-zero,
so every message names the input, the reason and, where there is one, the fix.
"""


class MoteError(Exception):
    """Base of every error mote raises on purpose."""


class ConfigError(MoteError, ValueError):
    """A setting, option or config file is invalid."""


class AnnotationError(MoteError, ValueError):
    """A label CSV or video list is missing or malformed."""


class DecodeError(MoteError, RuntimeError):
    """One video could not be decoded; the message is the reason recorded in the store."""


class WeightsUnavailable(MoteError, RuntimeError):
    """CLIP weights could not be found locally and cannot be downloaded."""


class RunFileError(ConfigError):
    """A run folder's file is missing, cut short or damaged; the message says how to remake it."""


class OutputError(MoteError, OSError):
    """A file could not be written (permission denied, read-only file system, disk full)."""
