"""Where a dataset's videos are: ``--dataset folder`` (a class per sub-folder of ``--root``),
the checks of a video root, and list entries kept inside it. ``datasets.open_dataset`` calls
these; they build on its ``DatasetSpec``."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from mote.cache_schema.embeddings_v1 import NO_LABEL
from mote.pipeline.data.datasets import FOLDER, DatasetSpec, VideoItem
from mote.pipeline.errors import AnnotationError, ConfigError
from mote.pipeline.locations import Url, locate
from mote.pipeline.video.files import VIDEO_EXTENSIONS, video_files
from mote.pipeline.video.remote_videos import check_prefix


def folder_dataset(root: Path, split: str) -> DatasetSpec:
    """``--dataset folder``: every video file under ``root`` (by extension, nested folders
    too), its class the first folder under ``root`` (class names sorted, labels by that
    order), its id the path relative to ``root``. A folder of videos with no sub-folders is
    an unlabelled collection; videos beside class folders are refused, naming one."""
    videos = [path.relative_to(root).as_posix() for path in video_files(root)]
    if not videos:
        raise AnnotationError(
            f"--root {root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in it or its "
            "sub-folders"
        )
    loose = [v for v in videos if "/" not in v]
    if len(loose) == len(videos):  # no class folders: an unlabelled collection
        items = tuple(VideoItem(v, NO_LABEL) for v in videos)
        return DatasetSpec(FOLDER, split, items, (), "", str(root))
    if loose:
        raise AnnotationError(
            f"--root {root}: {loose[0]!r} (and {len(loose) - 1} more) is not inside a class "
            "folder; with --dataset folder each sub-folder of --root is a class: move the "
            "loose videos into one, or list the videos with --dataset list"
        )
    names = sorted({v.split("/", 1)[0] for v in videos})
    index = {name: i for i, name in enumerate(names)}
    items = tuple(VideoItem(v, index[v.split("/", 1)[0]]) for v in videos)
    return DatasetSpec(FOLDER, split, items, tuple(names), str(root), str(root))


def check_root(
    dataset: str,
    root: str | os.PathLike[str] | None,
    flag: str = "--root",
    storage_options: dict[str, Any] | None = None,
) -> None:
    """A shipped dataset needs the folder of its videos; a ``list`` one defaults to its list's.
    A URL root (``s3://bucket/videos``) must hold objects."""
    if dataset != "list" and root is None:
        what = (
            "whose sub-folders are classes"
            if dataset == FOLDER
            else f"that holds the {dataset} videos"
        )
        raise ConfigError(f"{flag} is required: the folder {what}")
    root = locate(root) if root is not None else None
    if isinstance(root, Url):
        check_prefix(root, storage_options, flag)
    elif root is not None and not Path(root).is_dir():
        raise ConfigError(f"{flag} {root}: no such folder")


def check_inside_root(dataset: DatasetSpec) -> None:
    """Refuse a list entry that leaves the video root (an absolute path, a '..' part, a URL),
    naming the list file and line: a list must not make mote read, and store what it finds
    in, files the user did not mean to hand it (``--allow-outside-root`` when they do)."""
    for item in dataset.items:
        path = PurePosixPath(item.video_id)
        if path.is_absolute() or ".." in path.parts or "://" in item.video_id:
            raise AnnotationError(
                f"{_line_of(dataset.list_file, item.video_id)}: {item.video_id!r} is outside "
                "--root (an absolute path or a '..' part); list paths relative to --root, or "
                "pass --allow-outside-root to read it anyway"
            )


def _line_of(list_file: str, video_id: str) -> str:
    """``FILE:LINE`` of the first line of ``list_file`` that names ``video_id`` (the file alone
    when it cannot be read or does not name it: a shipped or combined list)."""
    try:
        lines = Path(list_file).read_text(errors="replace").splitlines()
    except OSError:
        return list_file
    found = next((n for n, line in enumerate(lines, start=1) if video_id in line), None)
    return f"{list_file}:{found}" if found else list_file


def folder_from_options(
    root: str | os.PathLike[str] | None, *files: str | os.PathLike[str] | None, split: str
) -> DatasetSpec:
    """``--dataset folder``, refusing what it does not read (its classes are its folders)."""
    if any(f is not None for f in files):
        raise ConfigError(
            "--dataset folder reads the classes from the sub-folders of --root; drop --list, "
            "--labels and --kinetics-csv, or use --dataset list with them"
        )
    if root is None:
        raise ConfigError("--dataset folder needs --root: the folder whose sub-folders are classes")
    if isinstance(locate(root), Url):
        raise ConfigError(
            f"--dataset folder reads a local folder, not {root}; for videos at a URL write a "
            "list of their keys and use --dataset list --list FILE --root URL"
        )
    return folder_dataset(Path(root), split)
