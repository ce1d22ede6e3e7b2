"""Which files are videos: the extensions ``predict`` labels, ``extract --dataset folder``
collects and a list line's ``path num_frames label`` variant recognises; no torch, so settings
and ``--help`` can name them."""

from __future__ import annotations

from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg")


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video by its extension (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def video_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The video files under ``folder`` (in its subfolders too with ``recursive``), sorted;
    hidden files and folders (a leading '.') are left out."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    found = [
        p
        for p in pattern
        if is_video(p)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)
