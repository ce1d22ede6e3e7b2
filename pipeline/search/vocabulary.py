"""A general vocabulary of actions: the text bank scores are normalised against when a
collection has no class names of its own. The K400, K600 (its three 160-class zero-shot splits),
UCF101 and HMDB51 class names the package already ships, one entry per name."""

from __future__ import annotations

import csv
import io

from mote.pipeline.data.datasets import shipped_file

LABEL_FILES = (
    "k400/kinetics_400_labels.csv",
    "k600/k160_labels_split1.csv",
    "k600/k160_labels_split2.csv",
    "k600/k160_labels_split3.csv",
    "ucf101/ucf_labels.csv",
    "hmdb51/hmdb51_labels.csv",
)


def vocabulary() -> list[str]:
    """The shipped class names, first spelling kept, repeats (any case, _ for space) dropped."""
    seen: dict[str, str] = {}
    for relative in LABEL_FILES:
        rows = csv.DictReader(io.StringIO(shipped_file(relative).read_text()))
        for row in rows:
            name = row["name"].strip()
            seen.setdefault(name.lower().replace("_", " "), name)
    return list(seen.values())
