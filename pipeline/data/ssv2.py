"""Something-Something v2 read as it ships: three JSON files and one ``<id>.webm`` per video.

* ``something-something-v2-labels.json``: ``{"Approaching something with your camera": "0",
  ...}``, the 174 class names (the templates without brackets) mapped to index strings.
* ``something-something-v2-train.json`` / ``-validation.json``: lists of ``{"id": "78687",
  "label": "holding potato next to vicks vaporub bottle", "template": "Holding [something] next
  to [something]", "placeholders": [...]}``. A video's class is its ``template`` with ``[`` and
  ``]`` removed, looked up in the labels file (``label`` is the filled-in sentence, not a class).
* ``something-something-v2-test.json`` lists ids only: the test split has no labels.

The video of ``id`` is ``<root>/<id>.webm``. Plain functions over the parsed JSON; the dataset
spec is built by ``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mote.pipeline.errors import AnnotationError

SPLITS = ("train", "validation")
UNLABELLED_SPLITS = ("test",)
LABELS_FILE = "something-something-v2-labels.json"
VIDEO_SUFFIX = ".webm"

# Spec 8.3: a horizontal flip swaps these classes' labels. Named here and looked up in the labels
# file; in the official something-something-v2-labels.json they are 86<->87, 93<->94, 166<->167.
FLIP_PAIR_NAMES: tuple[tuple[str, str], ...] = (
    ("Pulling something from left to right", "Pulling something from right to left"),  # 86, 87
    ("Pushing something from left to right", "Pushing something from right to left"),  # 93, 94
    (
        "Turning the camera left while filming something",  # 166
        "Turning the camera right while filming something",  # 167
    ),
)


def split_file(labels_file: str | os.PathLike[str], split: str) -> Path:
    """The split's JSON beside the labels file, as the dataset ships them."""
    return Path(labels_file).with_name(f"something-something-v2-{split}.json")


def check_split(split: str) -> None:
    """``train`` and ``validation`` have labels; the test split is refused with the way out."""
    if split in UNLABELLED_SPLITS:
        raise AnnotationError(
            "ssv2 split 'test': something-something-v2-test.json lists video ids without "
            "labels, and extract and finetune-e2e need labelled videos; use --split validation, "
            "or label test videos with `mote predict --run RUN VIDEO...`"
        )
    if split not in SPLITS:
        raise AnnotationError(f"ssv2 has no split {split!r}; valid splits: {', '.join(SPLITS)}")


def _load_json(path: str | os.PathLike[str]) -> object:
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names in index order from ``something-something-v2-labels.json``."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise AnnotationError(
            f"{path}: expected a JSON object of class name -> index, like {LABELS_FILE}"
        )
    by_index: dict[int, str] = {}
    for name, value in data.items():
        index = str(value).strip()
        if not index.isdigit():
            raise AnnotationError(f"{path}: class {name!r} has index {value!r}, not a number")
        if int(index) in by_index:
            raise AnnotationError(
                f"{path}: index {index} is both {by_index[int(index)]!r} and {name!r}"
            )
        by_index[int(index)] = name
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise AnnotationError(
            f"{path}: class indices must run 0..{len(by_index) - 1}; {missing[0]} is missing"
        )
    return tuple(by_index[i] for i in range(len(by_index)))


def class_of(template: str) -> str:
    """A video's class name: its template without the brackets around each placeholder."""
    return template.replace("[", "").replace("]", "")


def read_videos(
    path: str | os.PathLike[str], class_names: tuple[str, ...]
) -> list[tuple[str, int]]:
    """(video file relative to the root, label) of every video of a split JSON, in file order."""
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise AnnotationError(f"{path}: expected a non-empty JSON list of videos")
    index = {name: i for i, name in enumerate(class_names)}
    videos: list[tuple[str, int]] = []
    seen: set[str] = set()
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or "id" not in entry:
            raise AnnotationError(f"{path}: entry {n} is not an object with an 'id'")
        video = str(entry["id"])
        if "template" not in entry:
            raise AnnotationError(
                f"{path}: video {video} has no 'template' (an unlabelled test list?); "
                "ssv2 needs the train or validation JSON"
            )
        name = class_of(str(entry["template"]))
        if name not in index:
            raise AnnotationError(
                f"{path}: video {video}: template class {name!r} is not in the labels file; "
                f"pass the {LABELS_FILE} of the same release with --labels"
            )
        if video in seen:
            raise AnnotationError(f"{path}: video {video} is listed twice")
        seen.add(video)
        videos.append((video + VIDEO_SUFFIX, index[name]))
    return videos


def flip_pairs(class_names: tuple[str, ...], where: str) -> tuple[tuple[int, int], ...]:
    """The spec 8.3 pairs as class indices of this labels file."""
    index = {name: i for i, name in enumerate(class_names)}
    for pair in FLIP_PAIR_NAMES:
        for name in pair:
            if name not in index:
                raise AnnotationError(
                    f"{where}: class {name!r} is missing, so the left/right classes that a flip "
                    f"swaps (spec 8.3) cannot be found; pass the official {LABELS_FILE}, or "
                    "--flip off (never flip) or --flip A:B,... (your mirror pairs) to train"
                )
    return tuple((index[a], index[b]) for a, b in FLIP_PAIR_NAMES)
