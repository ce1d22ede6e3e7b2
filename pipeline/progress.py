"""How long-running stages report progress without knowing about the terminal.

Stages call a ``Progress``; the CLI passes one that draws a rich bar on stderr, library callers
and tests get ``NullProgress``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, label: str) -> None: ...

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that goes nowhere."""

    def start(self, total: int, label: str) -> None:
        pass

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass
