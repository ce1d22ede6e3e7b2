"""What a horizontal flip of a training clip does to its label (spec 7.2 step 3, spec 8.3).

Spec 7.2 flips training clips left-right with p = 0.5. For most classes a mirrored clip is still
the same class, but a class about a direction ("pulling something from left to right") becomes
its mirror class: spec 8.3 swaps SSv2's labels 86<->87, 93<->94 and 166<->167 on a flip. A
dataset says which of three things holds for it with a ``FlipRule``: flips keep every label (the
default), flips swap the labels of some class pairs, or flips are off.

Like ``augment``, this module imports only the standard library, so decode workers can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mote.pipeline.errors import ConfigError

FLIP_FLAG = "--flip"
OFF, KEEP = "off", "keep"


@dataclass(frozen=True)
class FlipRule:
    """``enabled=False``: training clips are never flipped. Otherwise each flipped clip whose
    class is in one of ``pairs`` takes the other class of its pair; every other label stays."""

    enabled: bool = True
    pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for a, b in self.pairs:
            if a < 0 or b < 0 or a == b:
                raise ConfigError(
                    f"{FLIP_FLAG} pair {a}:{b}: a pair is two different class indices >= 0"
                )
            for c in (a, b):
                if c in seen:
                    raise ConfigError(
                        f"{FLIP_FLAG}: class {c} is in two pairs; a flip maps a class to one mirror"
                    )
                seen.add(c)
        if not self.enabled and self.pairs:
            raise ConfigError(f"{FLIP_FLAG}: pairs swap labels on a flip; with flips off give none")

    @property
    def swaps(self) -> dict[int, int]:
        """label -> its mirror class, both ways round."""
        return {**dict(self.pairs), **{b: a for a, b in self.pairs}}

    def label(self, label: int, flipped: bool) -> int:
        """The label of a clip of class ``label`` after the flip draw ``flipped``."""
        return self.swaps.get(label, label) if flipped else label

    @property
    def text(self) -> str:
        """The rule as ``--flip`` spells it: ``off``, ``keep`` or ``86:87,93:94``."""
        if not self.enabled:
            return OFF
        return ",".join(f"{a}:{b}" for a, b in self.pairs) or KEEP

    def check_classes(self, num_classes: int, where: str) -> None:
        """Every paired index is a class of a dataset of ``num_classes`` (named by ``where``)."""
        for a, b in self.pairs:
            if max(a, b) >= num_classes:
                raise ConfigError(
                    f"{FLIP_FLAG} pair {a}:{b}: {where} has {num_classes} classes "
                    f"(0..{num_classes - 1})"
                )

    @classmethod
    def parse(cls, text: str) -> FlipRule:
        """``off``, ``keep`` or comma-separated ``A:B`` class-index pairs."""
        spelled = text.strip().lower()
        if spelled == OFF:
            return cls(enabled=False)
        if spelled == KEEP:
            return cls()
        pairs = []
        for part in spelled.split(","):
            a, sep, b = part.strip().partition(":")
            if not (sep and a.strip().isdigit() and b.strip().isdigit()):
                raise ConfigError(
                    f"{FLIP_FLAG} {text!r}: expected off, keep, or class index pairs swapped on "
                    "a flip such as 0:1,4:5"
                )
            pairs.append((int(a), int(b)))
        return cls(pairs=tuple(pairs))


KEEP_LABELS = FlipRule()  # the default: flips on, every label kept
# A class name with one of these words is about a direction a mirror reverses.
_DIRECTION = re.compile(r"\b(left|right)(wards?)?\b", re.IGNORECASE)


def mirrored_directions(rule: FlipRule, class_names: tuple[str, ...] | list[str]) -> list[str]:
    """The classes whose names say left or right that ``rule`` flips and keeps the label of:
    a mirrored "moving left" clip moves right, so its label is then wrong."""
    if not rule.enabled:
        return []
    swapped = rule.swaps
    return [
        name
        for index, name in enumerate(class_names)
        if index not in swapped and _DIRECTION.search(name)
    ]


def mirror_warning(rule: FlipRule, class_names: tuple[str, ...] | list[str]) -> str | None:
    """One line naming the classes ``mirrored_directions`` finds, and the way out; None when
    there are none."""
    names = mirrored_directions(rule, class_names)
    if not names:
        return None
    shown = ", ".join(repr(name) for name in names[:6])
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    return (
        f"{FLIP_FLAG} {rule.text}: training clips are mirrored left-right at random and keep "
        f"their labels, but {len(names)} classes name a direction ({shown}{more}), and a "
        f"mirrored clip of one shows the opposite direction; pass {FLIP_FLAG} {OFF} (never flip) "
        f"or {FLIP_FLAG} A:B,C:D (class indices of mirror pairs, swapped on a flip)"
    )
