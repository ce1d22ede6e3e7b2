"""Video lists and class names (spec section 9), including the annotation files mote ships.

Plain functions over the two text formats: a label CSV (``id,name`` header, one row per class in
index order) and a list file (``relative/path label``, label last; ``path num_frames label`` too);
SSv2's JSON files are read as they ship (``ssv2.py``). A split also says what a horizontal flip
does to its training labels (``DatasetSpec.flip``, spec 8.3).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from mote.cache_schema.embeddings_v1 import NO_LABEL
from mote.pipeline.data import ssv2
from mote.pipeline.errors import AnnotationError, ConfigError
from mote.pipeline.locations import Url, locate
from mote.pipeline.video.files import is_video
from mote.pipeline.video.flips import FlipRule
from mote.pipeline.video.remote_videos import list_prefix

ANNOTATIONS_PACKAGE = "mote.pipeline.data.annotations"
_LIST_ONLY = ("list",)  # datasets whose files the user always supplies
FOLDER = "folder"  # one class per sub-folder of --root, nothing else to supply


@dataclass(frozen=True)
class VideoItem:
    """One video: its path relative to the dataset root (its id in a store) and its label."""

    video_id: str
    label: int


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset split: the videos in list order and the class names in label order (none for
    an unlabelled collection, whose labels are all ``NO_LABEL``)."""

    name: str
    split: str
    items: tuple[VideoItem, ...]
    class_names: tuple[str, ...]
    labels_file: str
    list_file: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    def require_labels(self, command: str) -> None:
        """Refuse an unlabelled split (bare paths, a folder without class folders) in one line
        for a command that trains on classes."""
        if not self.labelled:
            raise AnnotationError(
                f"{self.list_file}: its videos have no classes, and {command} needs labelled "
                "videos; pass --labels FILE (CSV 'id,name') with a list of 'path label' lines, "
                "or use --dataset folder with one sub-folder per class"
            )

    @property
    def flip(self) -> FlipRule:
        """What spec 7.2's horizontal flip of a training clip does to its label: SSv2 swaps its
        left/right pairs (spec 8.3), others keep every label. Looked up when a training run
        flips, not when the split is read: ``extract`` never flips, so an SSv2 subset without
        the pairs extracts."""
        if self.name == "ssv2":
            return FlipRule(pairs=ssv2.flip_pairs(self.class_names, self.labels_file))
        return FlipRule()


# split -> (list file, labels file), relative to the annotations package
_SHIPPED: dict[str, dict[str, tuple[str, str]]] = {
    "k400": {
        "val": ("k400/vallist.txt", "k400/kinetics_400_labels.csv"),
        "test": ("k400/testlist.txt", "k400/kinetics_400_labels.csv"),
    },
    "k600": {
        f"split{n}": (f"k600/k160_test_split{n}.txt", f"k600/k160_labels_split{n}.csv")
        for n in (1, 2, 3)
    },
    "ucf101": {
        **{f"test{n}": (f"ucf101/testlist0{n}.txt", "ucf101/ucf_labels.csv") for n in (1, 2, 3)},
        **{f"train{n}": (f"ucf101/trainlist0{n}.txt", "ucf101/ucf_labels.csv") for n in (1, 2, 3)},
    },
    "hmdb51": {
        **{
            f"test{n}": (f"hmdb51/vallist_split{n}.txt", "hmdb51/hmdb51_labels.csv")
            for n in (1, 2, 3)
        },
        **{
            f"train{n}": (f"hmdb51/trainlist_split{n}.txt", "hmdb51/hmdb51_labels.csv")
            for n in (1, 2, 3)
        },
    },
}
# splits that exist but whose list is not shipped: the user passes --list
_USER_LISTS = {"k400": {"train": "k400/kinetics_400_labels.csv"}}
DATASETS: tuple[str, ...] = (*_SHIPPED, "ssv2", *_LIST_ONLY, FOLDER)

_K400_TRAIN_HELP = (
    "the K400 training list is not shipped; pass the official Kinetics-400 annotation CSV "
    "(label,youtube_id,time_start,time_end,split) with --kinetics-csv train.csv, or a list "
    "built from it with --list FILE"
)


def _lines(source: str | os.PathLike[str] | Traversable) -> list[str]:
    """The file's lines without line endings; CRLF, CR and a UTF-8 BOM are tolerated."""
    try:
        data = source.read_bytes() if isinstance(source, Traversable) else Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise AnnotationError(f"{source}: file not found") from exc
    except OSError as exc:
        raise AnnotationError(f"{source}: cannot read ({exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{source}: not UTF-8 text ({exc})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_labels(path: str | os.PathLike[str] | Traversable) -> list[str]:
    """Class names in label order from an ``id,name`` CSV; ids must run 0..C-1 in order."""
    rows = [(n, line.strip()) for n, line in enumerate(_lines(path), start=1) if line.strip()]
    if not rows or rows[0][1].replace(" ", "").lower() != "id,name":
        got = rows[0][1] if rows else "an empty file"
        raise AnnotationError(f"{path}:1: expected the header 'id,name', got {got!r}")
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in rows[1:]:
        index, sep, name = line.partition(",")
        name = name.strip()
        where = f"{path}:{lineno}"
        if not sep or not name:
            raise AnnotationError(f"{where}: expected 'index,name', got {line!r}")
        if index.strip() != str(len(names)):
            raise AnnotationError(
                f"{where}: class id {index.strip()!r} out of order; ids must run 0, 1, 2, ... "
                f"and this row should be {len(names)}"
            )
        if name in seen:
            raise AnnotationError(f"{where}: class name {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise AnnotationError(f"{path}: no classes after the 'id,name' header")
    return names


def _parse_list_line(line: str, where: str, num_classes: int | None) -> VideoItem:
    """One list line: the label is the last field, the path everything before it (spaces kept).

    An integer just before the label is the ``path num_frames label`` variant's frame count only
    when the path cannot contain it: the line has exactly three fields, or what precedes the
    integer ends in a video extension. So ``my clip 7 2`` is the video ``my clip 7``.
    """
    fields = line.split()
    if len(fields) < 2:
        raise AnnotationError(f"{where}: expected 'relative/path label', got {line!r}")
    head, last = line.rsplit(maxsplit=1)
    parts = head.rsplit(maxsplit=1)
    if len(parts) == 2 and parts[1].isdigit() and (len(fields) == 3 or is_video(parts[0])):
        head = parts[0]  # the 'path num_frames label' variant
    try:
        label = int(last)
    except ValueError:
        raise AnnotationError(
            f"{where}: label {last!r} is not an integer (lines are 'relative/path label')"
        ) from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise AnnotationError(f"{where}: label {label} out of range {bound}")
    return VideoItem(video_id=head, label=label)


def _parse_bare_path(line: str, where: str) -> VideoItem:
    """One line of an unlabelled list: the whole line is the path (spaces kept). A line that
    reads as ``path label`` is refused: its labels would silently become part of the path."""
    head, _, last = line.rpartition(" ")
    if head and last.strip().lstrip("-").isdigit() and is_video(head.strip()):
        raise AnnotationError(
            f"{where}: {line!r} reads as 'path label' but no --labels was given; pass --labels "
            "FILE (CSV 'id,name') for a labelled store, or list bare paths for an unlabelled one"
        )
    return VideoItem(video_id=line, label=NO_LABEL)


def read_list(
    path: str | os.PathLike[str] | Traversable,
    num_classes: int | None = None,
    labelled: bool = True,
) -> list[VideoItem]:
    """Videos of a list file in file order; blank lines are skipped, a bad line names file:line.
    Unless ``labelled``, each line is a bare path and every label ``NO_LABEL``."""
    items: list[VideoItem] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        if labelled:
            item = _parse_list_line(line, where, num_classes)
        else:
            item = _parse_bare_path(line, where)
        if item.video_id in first_line:
            raise AnnotationError(
                f"{path}:{lineno}: video {item.video_id!r} already listed on line "
                f"{first_line[item.video_id]}; each video may appear once"
            )
        first_line[item.video_id] = lineno
        items.append(item)
    if not items:
        raise AnnotationError(f"{path}: no videos listed")
    return items


def shipped_file(relative: str) -> Traversable:
    """An annotation file inside the installed package (regular or editable install)."""
    return resources.files(ANNOTATIONS_PACKAGE).joinpath(relative)


def _files_for(
    name: str, split: str, list_file: str | None, labels_file: str | None
) -> tuple[str | Traversable, str | Traversable]:
    """(list, labels) sources for a dataset split; user files override shipped ones."""
    if name in _LIST_ONLY:
        if list_file is None:
            raise AnnotationError(
                f"dataset {name!r} needs --list FILE: lines 'relative/path label' with --labels "
                "FILE (CSV 'id,name' with header), or bare paths for an unlabelled store"
            )
        return list_file, labels_file
    if name not in _SHIPPED:
        raise AnnotationError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    splits = _SHIPPED[name]
    user_splits = _USER_LISTS.get(name, {})
    if split in splits:
        shipped_list, shipped_labels = splits[split]
        return (
            list_file or shipped_file(shipped_list),
            labels_file or shipped_file(shipped_labels),
        )
    if split in user_splits:
        if list_file is None:
            raise AnnotationError(f"{name} split {split!r}: {_K400_TRAIN_HELP}")
        return list_file, labels_file or shipped_file(user_splits[split])
    union = [ALL_SPLITS] if name in ZERO_SHOT_SPLITS else []
    valid = ", ".join([*splits, *user_splits, *union])
    raise AnnotationError(f"{name} has no split {split!r}; valid splits: {valid}")


# The zero-shot protocol's splits (spec 8.2); split "all" is their union, so one store can serve
# every split and a video shared by splits is encoded once.
ZERO_SHOT_SPLITS: dict[str, tuple[str, ...]] = {
    "ucf101": ("test1", "test2", "test3"),
    "hmdb51": ("test1", "test2", "test3"),
    "k600": ("split1", "split2", "split3"),
}
ALL_SPLITS = "all"


def _union_of_splits(name: str) -> DatasetSpec:
    """Every video of the protocol's splits once; classes are the union of their names (K600's
    splits each have their own 160 of 217 names), labels re-indexed by name."""
    parts = [load_dataset(name, split) for split in ZERO_SHOT_SPLITS[name]]
    same = all(part.class_names == parts[0].class_names for part in parts)
    names = (
        parts[0].class_names if same else tuple(sorted({n for p in parts for n in p.class_names}))
    )
    index = {class_name: i for i, class_name in enumerate(names)}
    items: dict[str, VideoItem] = {}
    for part in parts:
        for item in part.items:
            label = index[part.class_names[item.label]]
            known = items.setdefault(item.video_id, VideoItem(item.video_id, label))
            if known.label != label:
                raise AnnotationError(
                    f"{name}: video {item.video_id} is '{names[known.label]}' in one split and "
                    f"'{names[label]}' in another"
                )
    return DatasetSpec(
        name=name,
        split=ALL_SPLITS,
        items=tuple(items.values()),
        class_names=names,
        labels_file=" + ".join(p.labels_file for p in parts) if not same else parts[0].labels_file,
        list_file=" + ".join(p.list_file for p in parts),
    )


def load_dataset(
    name: str,
    split: str,
    list_file: str | os.PathLike[str] | None = None,
    labels_file: str | os.PathLike[str] | None = None,
) -> DatasetSpec:
    """A dataset split from the shipped annotations, or from --list/--labels files.

    ``split="all"`` for ucf101, hmdb51 and k600 is the union of the zero-shot test splits.
    """
    name = name.lower()
    if split == ALL_SPLITS and name in ZERO_SHOT_SPLITS and list_file is None:
        return _union_of_splits(name)
    if name == "ssv2":
        return _ssv2(split, list_file, labels_file)
    list_src, labels_src = _files_for(
        name,
        split,
        None if list_file is None else os.fspath(list_file),
        None if labels_file is None else os.fspath(labels_file),
    )
    class_names = read_labels(labels_src) if labels_src is not None else []
    items = read_list(list_src, len(class_names), labelled=labels_src is not None)
    return DatasetSpec(
        name=name,
        split=split,
        items=tuple(items),
        class_names=tuple(class_names),
        labels_file="" if labels_src is None else str(labels_src),
        list_file=str(list_src),
    )


def _ssv2(
    split: str,
    list_file: str | os.PathLike[str] | None,
    labels_file: str | os.PathLike[str] | None,
) -> DatasetSpec:
    """An SSv2 split from its JSON files (``--list`` defaults to the split's JSON beside
    ``--labels``); a training flip swaps the spec 8.3 left/right pairs (``DatasetSpec.flip``)."""
    ssv2.check_split(split)
    if labels_file is None:
        raise AnnotationError(
            f"dataset 'ssv2' needs --labels {ssv2.LABELS_FILE} (and --list the split's JSON, "
            "by default the one beside it)"
        )
    list_src = Path(list_file) if list_file is not None else ssv2.split_file(labels_file, split)
    names = ssv2.read_class_names(labels_file)
    videos = ssv2.read_videos(list_src, names)
    return DatasetSpec(
        name="ssv2",
        split=split,
        items=tuple(VideoItem(video, label) for video, label in videos),
        class_names=names,
        labels_file=os.fspath(labels_file),
        list_file=os.fspath(list_src),
    )


def kinetics_folder(label: str, dataset: str = "k400") -> str:
    """A class's folder name: spaces become '_'; K400 also drops parentheses (K600 keeps them)."""
    folder = label.replace(" ", "_")
    if dataset == "k400":
        folder = folder.replace("(", "").replace(")", "")
    return folder


def kinetics_items_from_csv(
    csv_path: str | os.PathLike[str],
    class_names: list[str] | tuple[str, ...],
    split: str,
    dataset: str = "k400",
    root: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[VideoItem]:
    """Build a Kinetics list from the official CSV (``label,youtube_id,time_start,time_end,split``).

    Rows of other splits are skipped. With ``root``, clips whose file is missing are left out
    (under a URL root: those absent from one listing of its prefix).
    """
    root = locate(root) if root is not None else None
    present = list_prefix(root, storage_options) if isinstance(root, Url) else None
    index = {name: i for i, name in enumerate(class_names)}
    reader = csv.DictReader(io.StringIO("\n".join(_lines(csv_path))))
    needed = {"label", "youtube_id", "time_start", "time_end", "split"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise AnnotationError(
            f"{csv_path}:1: header {reader.fieldnames} lacks {sorted(needed)}; expected the "
            "official Kinetics CSV columns label,youtube_id,time_start,time_end,split"
        )
    items: list[VideoItem] = []
    splits_seen: set[str] = set()
    for row in reader:
        splits_seen.add(row["split"])
        if row["split"] != split:
            continue
        where = f"{csv_path}:{reader.line_num}"
        if row["label"] not in index:
            raise AnnotationError(f"{where}: label {row['label']!r} is not a class of {dataset}")
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            raise AnnotationError(f"{where}: time_start/time_end are not numbers") from None
        folder = kinetics_folder(row["label"], dataset)
        video_id = f"{folder}/{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        if root is None or (
            video_id in present if present is not None else (Path(root) / video_id).is_file()
        ):
            items.append(VideoItem(video_id, index[row["label"]]))
    if not splits_seen & {split}:
        raise AnnotationError(
            f"{csv_path}: no rows with split {split!r}; splits present: {sorted(splits_seen)}"
        )
    return items


def kinetics_dataset(
    csv_path: str | os.PathLike[str],
    split: str,
    root: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
) -> DatasetSpec:
    """K400 ``split`` from the official annotation CSV: the clips present under ``root``.

    Clips that could not be downloaded are left out, as the shipped val list does.
    """
    labels = shipped_file("k400/kinetics_400_labels.csv")
    names = read_labels(labels)
    items = kinetics_items_from_csv(csv_path, names, split, "k400", root, storage_options)
    if not items:
        raise AnnotationError(f"{csv_path}: none of its {split} clips exists under {root}")
    return DatasetSpec(
        name="k400",
        split=split,
        items=tuple(items),
        class_names=tuple(names),
        labels_file=str(labels),
        list_file=os.fspath(csv_path),
    )


def open_dataset(
    name: str,
    split: str,
    list_file: str | os.PathLike[str] | None = None,
    labels_file: str | os.PathLike[str] | None = None,
    kinetics_csv: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    *,
    allow_outside_root: bool = False,
) -> tuple[DatasetSpec, Path | Url]:
    """The dataset options of the commands that read videos (``--dataset``, ``--split``,
    ``--list/--labels``, ``--kinetics-csv``, ``--root``): the split, and the folder its video
    paths are relative to (``--root``, a folder or a URL prefix, else the list file's folder).
    Its videos must be inside that folder unless ``allow_outside_root``."""
    from mote.pipeline.data.folders import check_inside_root, folder_from_options

    if name == FOLDER:
        dataset = folder_from_options(root, list_file, labels_file, kinetics_csv, split=split)
    elif kinetics_csv is None:
        dataset = load_dataset(name, split, list_file, labels_file)
    elif name != "k400":
        raise ConfigError("--kinetics-csv is for --dataset k400 (the shipped 400 class names)")
    elif root is None:
        raise ConfigError("--kinetics-csv needs --root: the folder that holds the k400 clips")
    else:
        dataset = kinetics_dataset(kinetics_csv, split, root, storage_options)
    if not allow_outside_root:
        check_inside_root(dataset)
    root = locate(root) if root is not None else None
    if isinstance(root, Url):
        return dataset, root
    return dataset, Path(root) if root is not None else Path(dataset.list_file).parent
