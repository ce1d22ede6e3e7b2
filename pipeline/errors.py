"""mote's error types: each also subclasses the builtin a caller would naturally catch.

The CLI prints the message of a ``MoteError`` (or a store error) as one line and exits with the
class's ``exit_code`` (stages/faults.py's table), so every message names the input, the reason
and, where there is one, the fix.
"""

import errno
import re

from mote.pipeline.exit_codes import DAMAGE, DIVERGED, SYSTEM, USAGE


class MoteError(Exception):
    """Base of every error mote raises on purpose."""

    exit_code = USAGE  # usage or input error, unless a subclass says otherwise


class MoteWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as one
    'warning:' line)."""


class RunBeingWritten(MoteWarning):
    """A run folder was read while another process writes it: its last epoch may change."""


class ConfigError(MoteError, ValueError):
    """A setting, option or config file is invalid."""


class AnnotationError(MoteError, ValueError):
    """A label CSV or video list is missing or malformed."""


class DecodeError(MoteError, RuntimeError):
    """One video could not be decoded; the message is the reason recorded in the store."""


class WeightsUnavailable(MoteError, RuntimeError):
    """CLIP weights could not be found locally and cannot be downloaded."""


class TrainingDiverged(MoteError, RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept.
    ``what`` is the message without its way out, for a command whose way out differs."""

    exit_code = DIVERGED

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what or message


class RunFileError(ConfigError):
    """A run folder's file is missing, cut short or damaged; the message says how to remake it."""

    exit_code = DAMAGE


class IndexMismatch(ConfigError):
    """A saved search index was built from other embeddings than the ones searched (or is not
    an index mote wrote); the message says how to rebuild it."""


class OutputError(MoteError, OSError):
    """A file could not be written (permission denied, read-only file system, disk full)."""

    exit_code = SYSTEM


# What an operating-system fault means for a user, and the way out, by errno.
OS_FAULTS = {
    errno.ENOSPC: "disk full; free some space (or write elsewhere), then rerun the same command "
    "to continue",
    errno.EDQUOT: "disk quota exceeded; free some space (or write elsewhere), then rerun",
    errno.EROFS: "read-only file system; write to a folder on a writable disk",
    errno.EACCES: "permission denied; fix the permissions or choose another path",
    errno.EPERM: "operation not permitted; fix the permissions or choose another path",
    errno.EISDIR: "is a folder where a file is expected; pass a file path",
    errno.ENOTDIR: "a part of this path is a file, not a folder (an --out that is a file?); "
    "choose another path",
    errno.EEXIST: "already exists and is not a folder (an --out that is a file?); "
    "choose another path",
    errno.ENOENT: "no such file or folder; check the path",
    errno.EIO: "input/output error from the disk (nothing was marked damaged: the data may be "
    "fine); check the disk, then rerun the same command",
    errno.EFBIG: "file larger than this process may write (ulimit -f) or the file system "
    "allows; raise the limit or write elsewhere, then rerun",
}


def os_fault_reason(error: OSError) -> str:
    """The reason and the fix for an OSError, without its file name (callers put that first)."""
    reason = OS_FAULTS.get(error.errno or -1)
    if reason is None:
        reason = f"{error.strerror or error}; check the path and the disk, then rerun"
    return reason


class Unreachable(MoteError, ConnectionError):
    """The server of a store or video URL cannot be reached: nothing was changed, and the same
    command continues once it answers."""

    exit_code = SYSTEM  # (the network, not the data)


# Network failures of fsspec's object stores (botocore, aiohttp, urllib3), by class name: their
# packages are optional, and an outage must never read as damage or a refused input.
_NETWORK_ERRORS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "ClientConnectorError",
        "ClientConnectionError",
        "ClientConnectionResetError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ClientOSError",
        "NewConnectionError",
        "MaxRetryError",
    }
)


def network_failure(error: BaseException | None) -> BaseException | None:
    """The object-store network error behind ``error`` (itself, or what it was raised from or
    while handling), None when there is none."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(kind.__name__ in _NETWORK_ERRORS for kind in type(error).__mro__):
            return error
        error = error.__cause__ or error.__context__
    return None


def system_fault(error: BaseException) -> bool:
    """Whether reading failed for the machine's sake, not the data's: a server that cannot be
    reached, or an operating-system error (EIO from a failing disk, permission denied) other
    than a missing file. Such a failure is exit 4 and never counts as damage."""
    if network_failure(error) is not None:
        return True
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno not in (None, errno.ENOENT):
            return True
        error = error.__cause__ or error.__context__
    return False


def endpoint_of(error: BaseException) -> str:
    """The server a network error could not reach: its URL's scheme and host, else its host."""
    text = str(error)
    found = re.search(r"https?://[^/\s\"']+", text)
    if found:
        return found.group(0)
    found = re.search(r"host ([^\s:]+:\d+)", text)
    return found.group(1) if found else "the object store"


def unreachable_message(error: BaseException, what: str = "the store") -> str:
    """One line for an outage: the endpoint, why, that nothing was harmed and the way on."""
    cause = network_failure(error) or error
    return (
        f"{endpoint_of(cause)}: cannot reach the server ({short_error(cause, 120)}); {what} is "
        "untouched (no video was marked failed): rerun the same command once the server "
        "answers and it continues where it stopped"
    )


class PeerLost(MoteError, RuntimeError):
    """Another process of a torchrun job stopped (killed, out of memory, its node gone): not a
    bug here; the job's last checkpoint is whole and a resumed launch continues from it."""

    exit_code = SYSTEM


class EncoderFailed(MoteError, RuntimeError):
    """An encoder process died or raised; the message names its device and how to go on."""

    exit_code = SYSTEM  # (out of memory, a device error)


def short_error(err: BaseException, limit: int = 100) -> str:
    """An exception as a short one-line text for error messages."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# torch.load's own advice, which mote never repeats: loading with weights_only=False runs any
# code the file holds.
_TORCH_ADVICE = re.compile(
    r"Weights only load failed\..*?(?:WeightsUnpickler error:\s*(?P<why>.*?)\s*"
    r"Check the documentation of torch\.load.*|$)",
    re.DOTALL,
)


def torch_load_reason(err: BaseException, limit: int = 160) -> str:
    """Why torch could not read a weights file, in one short line without torch's advice to
    load with ``weights_only=False``; a file that is neither a zip archive nor a pickle torch
    reads (torch's legacy reader fails with a bare KeyError or IndexError) is "not a torch
    file"."""
    text = " ".join(str(err).split())
    if isinstance(err, KeyError | IndexError | EOFError | UnicodeDecodeError):
        return "not a torch file: neither a zip archive nor a pickle torch can read"
    found = _TORCH_ADVICE.search(text)
    if found:
        why = (found.group("why") or "").strip() or "content beyond tensors"
        return f"a pickle torch's safe reader refuses ({why})"[:limit]
    if "PytorchStreamReader" in text:  # a zip archive cut short or damaged: its first sentence
        return text.split(". ")[0][:limit]
    return short_error(err, limit)
