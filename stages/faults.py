"""Every fault one line on stderr and one exit code, by the one rule in ``EXIT_CODES``.

mote's own errors carry their exit code (``exit_code`` on the error class: a bad input is
``USAGE``, a damaged store or run ``DAMAGE``, a failed write ``SYSTEM``, a diverged run
``DIVERGED``; the numbers are pipeline/exit_codes.py's); an operating-system error is a system
fault named by its file and errno; anything else is a ``BUG``. The README's exit-code table is
this dict (tests/test_faults_exit_codes.py compares them).
"""

from __future__ import annotations

import errno
import sys
import warnings

import typer
from rich.text import Text

from mote.cache_schema.store_errors import StoreError
from mote.pipeline.errors import (
    MoteError,
    MoteWarning,
    Unreachable,
    network_failure,
    os_fault_reason,
    unreachable_message,
)
from mote.pipeline.exit_codes import (
    BUG,
    DAMAGE,
    DIVERGED,
    DONE,
    INTERRUPTED,
    NO_RESULT,
    SYSTEM,
    TERMINATED,
    USAGE,
)
from mote.stages.console import stderr

EXIT_CODES = {
    DONE: "done",
    NO_RESULT: "done, but no video gave a result (every one failed to decode), or with --strict "
    "some failed (extract, predict)",
    USAGE: "usage or input error: an option, file or setting refused, a folder another process "
    "holds, a store or run that does not match",
    DAMAGE: "damage found: a store or run file is missing, cut short or fails its checks "
    "(`info --verify` lists it; `extract --repair` or a new run fixes it)",
    SYSTEM: "system fault: disk full, permission denied, read-only or failing disk, a server that "
    "cannot be reached (rerun the same command to continue)",
    DIVERGED: "training diverged: the loss or weights became NaN or infinite, or weights too large "
    "for fp16 (the last good epoch is kept)",
    BUG: "unexpected error, a bug in mote: rerun with MOTE_DEBUG=1 and report the traceback",
    INTERRUPTED: "interrupted (Ctrl-C): rerun the same command to continue",
    TERMINATED: "terminated (SIGTERM): rerun the same command to continue",
}

# The click that typer parses with: click itself, or newer typer's own copy (typer._click), whose
# exceptions are not click's. typer.BadParameter, public in both, says which.
_click_errors = sys.modules[typer.BadParameter.__module__]
ClickError: type[Exception] = _click_errors.ClickException  # a refused command line
# `mote` alone (click >= 8.2): its help, already in the message (or printed by rich).
NoArgsIsHelp: type[Exception] | tuple = getattr(_click_errors, "NoArgsIsHelpError", ())


# Operating-system errors that mean "this path is not what the command needs" (a usage error):
# an --out that is a file, a file where a folder is needed, a path that does not exist.
PATH_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOENT}


def videos_exit_code(done: int, failed: int, strict: bool) -> int:
    """extract and predict: 0 while some video gave a result (the failed ones are listed),
    ``NO_RESULT`` when every one failed, or with ``strict`` when any failed."""
    return NO_RESULT if failed and (strict or not done) else DONE


def exit_code(error: BaseException) -> int:
    """The exit code of a fault, by ``EXIT_CODES``: an operating-system error (``OutputError``
    included) by its errno or its cause's, else the error class's ``exit_code``."""
    if isinstance(error, ClickError):  # an unknown option, a missing argument
        return USAGE
    if network_failure(error) is not None:  # an outage, however it was reported
        return SYSTEM
    number = _errno(error) if isinstance(error, OSError) else None
    if number is not None:
        return USAGE if number in PATH_ERRNOS else SYSTEM
    code = getattr(error, "exit_code", None)
    if isinstance(error, MoteError | StoreError) and code is not None:
        return code
    if isinstance(error, OSError):
        return SYSTEM
    return DAMAGE if _in_codec(error) else BUG


def _errno(error: BaseException) -> int | None:
    for item in (error, error.__cause__):
        if isinstance(item, OSError) and item.errno is not None:
            return item.errno
    return None


def _zarr_source(error: BaseException) -> str | None:
    """The zarr array (store path) a failing read or write was working on, from its traceback."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if type(value).__module__.startswith("zarr") and hasattr(value, "store_path"):
                found = found or str(value.store_path)
        tb = tb.tb_next
    return found


def _in_codec(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/zarr/" in name or "numcodecs" in name:
            return True
        tb = tb.tb_next
    return False


def fault_message(error: BaseException) -> str:
    """One line for any fault: what failed on which file, and the way out."""
    if isinstance(error, ClickError):
        return _usage_message(error)
    if not isinstance(error, Unreachable) and network_failure(error) is not None:
        return unreachable_message(error)
    if isinstance(error, MoteError | StoreError):
        return str(error)
    if isinstance(error, OSError):
        name = error.filename or _zarr_source(error) or "a file"
        if error.filename2:
            name = f"{name} -> {error.filename2}"
        return f"{name}: {os_fault_reason(error)}"
    if _in_codec(error):
        where = _zarr_source(error) or "a feature store"
        return (
            f"{where}: cannot decode stored data ({type(error).__name__}: {error}); the store is "
            "damaged: check it with `mote info STORE --verify` and rebuild the damaged rows with "
            "`mote extract ... --repair`"
        )
    return (
        f"unexpected {type(error).__name__}: {error}; rerun with MOTE_DEBUG=1 for the traceback "
        "and report it"
    )


def _usage_message(error: Exception) -> str:
    """click's refusal of the command line (no such option, missing argument, bad value) in
    mote's words: lower case, then where the command's options are listed."""
    message = error.format_message().strip().rstrip(".")  # type: ignore[attr-defined]
    ctx = getattr(error, "ctx", None)
    where = ctx.command_path if ctx is not None else "mote"
    return f"{message[:1].lower()}{message[1:]}; see {where} --help"


def _print_line(label: str, style: str, message: str) -> None:
    """'label: message' on stderr as one line; plain text when stderr is not a terminal (no
    escape codes)."""
    line = " ".join(message.split())
    if sys.stderr.isatty():
        stderr.print(Text.assemble((f"{label}: ", style), line), soft_wrap=True)
    else:
        print(f"{label}: {line}", file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    _print_line("warning", "bold yellow", message)


def show_mote_warnings() -> None:
    """Print mote's own warnings (``MoteWarning``) as one 'warning:' line each, once per
    message; other libraries' warnings keep Python's format."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, MoteWarning):
            print_warning(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def print_error(message: str) -> None:
    _print_line("error", "bold red", message)
