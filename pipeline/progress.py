"""How long-running stages report progress without knowing about the terminal.

Stages call a ``Progress``; the CLI passes one that draws a rich bar on stderr, library callers
and tests get ``NullProgress``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, label: str, unit: str = "videos") -> None: ...

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that goes nowhere."""

    def start(self, total: int, label: str, unit: str = "videos") -> None:
        pass

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


class Quiet:
    """Wraps a Progress and drops its messages (bars only): for stages run inside the demo."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner

    def start(self, total: int, label: str, unit: str = "videos") -> None:
        self.inner.start(total, label, unit)

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        self.inner.update(done=done, failed=failed, frames=frames)

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        self.inner.finish()
