"""The names of ``mote search --score``'s rankings, light (no torch) so settings can list them;
``scoring.py`` computes them and docs/evaluation.md ("Ranking scores") says which wins and why."""

from __future__ import annotations

from mote.pipeline.errors import ConfigError

# Default first. "cosine" is the raw inner product; the others normalise it against a text bank.
SCORES: tuple[str, ...] = ("softmax", "dual-softmax", "centred", "cosine")
DEFAULT_SCORE = SCORES[0]
RAW_SCORE = "cosine"


def check_score(name: str) -> None:
    """``--score NAME`` names one of the rankings (search, serve and the scorer ask the same)."""
    if name not in SCORES:
        raise ConfigError(f"--score {name!r}: use one of {', '.join(SCORES)}")
