"""The venv's real ``mote`` console script as a process: piped (a log, CI) or under a
pseudo-terminal (a user's shell: rich bars and boxed tables on), as the two readers see it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The console script pip wrote beside this interpreter: what a user's shell runs.
MOTE = Path(sys.executable).parent / "mote"

# Escape sequences a terminal interprets (colours, cursor moves of a redrawn bar).
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>])")


def plain_env(**extra: str) -> dict[str, str]:
    """This environment less what would make rich treat a pipe as a terminal, offline."""
    drop = {"FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES", "MOTE_DEBUG", "NO_COLOR"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


@dataclass(frozen=True, repr=False)
class Ran:
    """A finished ``mote`` process. Under a terminal ``out`` is what the screen received
    (stdout and stderr interleaved, escape codes removed, ``\\r\\n`` as ``\\n``), ``err`` empty."""

    args: tuple[str, ...]
    terminal: bool
    code: int
    out: str
    err: str
    seconds: float

    def __repr__(self) -> str:  # what an assertion about it shows
        where = "terminal" if self.terminal else "pipe"
        return (
            f"mote {' '.join(self.args)} ({where}) exited {self.code} after {self.seconds:.1f} s"
            f"\n--- stdout (tail)\n{self.out[-3000:]}\n--- stderr (tail)\n{self.err[-3000:]}"
        )


def run_piped(args: Sequence[object], timeout: float = 300, cwd: Path | None = None) -> Ran:
    """``mote ARGS`` with stdout and stderr on pipes."""
    argv = [str(a) for a in args]
    started = time.monotonic()
    done = subprocess.run(
        [str(MOTE), *argv],
        capture_output=True,
        text=True,
        env=plain_env(),
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    return Ran(tuple(argv), False, done.returncode, done.stdout, done.stderr, seconds)


def run_in_terminal(
    args: Sequence[object], timeout: float = 300, columns: int = 120, cwd: Path | None = None
) -> Ran:
    """``mote ARGS`` with a pseudo-terminal of ``columns`` x 40 on stdin, stdout and stderr."""
    argv = [str(a) for a in args]
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = plain_env(TERM="xterm-256color", COLUMNS=str(columns), LINES="40")
    started = time.monotonic()
    process = subprocess.Popen(
        [str(MOTE), *argv], stdin=child, stdout=child, stderr=child, env=env, cwd=cwd
    )
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0:
                process.kill()
                raise TimeoutError(f"mote {' '.join(argv)} (terminal) ran past {timeout} s")
            ready, _, _ = select.select([main], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every holder of the terminal's other end closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=max(1.0, started + timeout - time.monotonic()))
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    screen = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return Ran(tuple(argv), True, code, _ESCAPES.sub("", screen), "", seconds)


def run_mote(
    args: Sequence[object], terminal: bool, timeout: float = 300, cwd: Path | None = None
) -> Ran:
    """``mote ARGS`` piped or under a terminal."""
    if terminal:
        return run_in_terminal(args, timeout=timeout, cwd=cwd)
    return run_piped(args, timeout=timeout, cwd=cwd)
