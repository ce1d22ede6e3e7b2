"""Label CSVs, list files and the shipped benchmark annotations (spec section 9)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mote.pipeline.data.datasets import (
    VideoItem,
    kinetics_items_from_csv,
    load_dataset,
    read_labels,
    read_list,
)
from mote.pipeline.errors import AnnotationError


@pytest.mark.parametrize(
    ("name", "split", "videos", "classes"),
    [
        ("k400", "val", 19_877, 400),
        ("k400", "test", 38_676, 400),
        ("k600", "split1", 14_858, 160),
        ("k600", "split3", 14_874, 160),
        ("ucf101", "test1", 3_783, 101),
        ("ucf101", "test3", 3_696, 101),
        ("hmdb51", "test1", 1_530, 51),
        ("hmdb51", "train2", 3_570, 51),
    ],
)
def test_shipped_splits_match_the_dataset_readme(
    name: str, split: str, videos: int, classes: int
) -> None:
    spec = load_dataset(name, split)
    assert (len(spec.items), len(spec.class_names)) == (videos, classes)
    assert len({item.label for item in spec.items}) == classes  # every class is used
    assert (spec.name, spec.split) == (name, split)


def test_shipped_names_and_first_items() -> None:
    k400 = load_dataset("k400", "val")
    assert k400.class_names[0] == "abseiling" and k400.class_names[399] == "zumba"
    assert k400.items[0] == VideoItem("abseiling/0wR5jVB-WPk_000417_000427.mp4", 0)
    assert load_dataset("ucf101", "test1").class_names[0] == "Apply Eye Makeup"
    assert load_dataset("hmdb51", "test1").class_names[0] == "brush hair"
    hmdb = load_dataset("hmdb51", "test2")
    assert set(Counter(item.label for item in hmdb.items).values()) == {30}
    assert Path(k400.list_file).name == "vallist.txt"


def test_crlf_labels_are_stripped(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"id,name\r\n0,Apply Eye Makeup\r\n1,YoYo\r\n2,hurling (sport)\r\n\r\n")
    assert read_labels(path) == ["Apply Eye Makeup", "YoYo", "hurling (sport)"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,id\n0,a\n", r":1: expected the header 'id,name'"),
        ("id,name\n0,a\n2,b\n", r":3: class id '2' out of order"),
        ("id,name\n0,a\n1,a\n", r":3: class name 'a' repeats line 2"),
        ("id,name\n0\n", r":2: expected 'index,name'"),
        ("id,name\n", r"no classes"),
    ],
)
def test_bad_label_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_labels(path)


def test_list_variants(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(
        b"a/one.mp4 0\r\n\r\nb/with space.mp4 1\r\n  c/three.avi 300 2  \nd/four.mp4\t1\n"
    )
    assert read_list(path, num_classes=3) == [
        VideoItem("a/one.mp4", 0),
        VideoItem("b/with space.mp4", 1),
        VideoItem("c/three.avi", 2),
        VideoItem("d/four.mp4", 1),
    ]


def test_list_paths_with_spaces_take_the_label_from_the_last_field(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("clip 7.mp4 3\nmy clip 7 2\nmy  clip.mp4 300 1\nraw_frames 16 0\n")
    assert read_list(path, num_classes=4) == [
        VideoItem("clip 7.mp4", 3),
        VideoItem("my clip 7", 2),  # not the video 'my clip' with 7 frames
        VideoItem("my  clip.mp4", 1),  # a video file name, then the frame count
        VideoItem("raw_frames", 0),  # the classic three-field 'path num_frames label'
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a.mp4 0\n\nb.mp4 x\n", r"list.txt:3: label 'x' is not an integer"),
        ("a.mp4 0\nb.mp4\n", r"list.txt:2: expected 'relative/path label'"),
        ("a.mp4 0\nb.mp4 5\n", r"list.txt:2: label 5 out of range 0..2"),
        ("a.mp4 0\nb.mp4 -1\n", r"list.txt:2: label -1 out of range"),
        ("a.mp4 0\na.mp4 1\n", r"list.txt:2: video 'a.mp4' already listed on line 1"),
        ("\n\n", r"list.txt: no videos listed"),
    ],
)
def test_bad_list_lines_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_list(path, num_classes=3)


def test_missing_file_is_an_annotation_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="file not found"):
        read_list(tmp_path / "absent.txt")


def test_split_errors_explain_the_choices() -> None:
    with pytest.raises(AnnotationError, match="valid splits: split1, split2, split3"):
        load_dataset("k600", "val")
    with pytest.raises(AnnotationError, match="valid splits: test1, test2, test3, train1"):
        load_dataset("ucf101", "test4")
    with pytest.raises(AnnotationError, match="train3, all"):
        load_dataset("hmdb51", "test4")
    with pytest.raises(AnnotationError, match="--kinetics-csv"):
        load_dataset("k400", "train")
    with pytest.raises(AnnotationError, match="unknown dataset 'k700'"):
        load_dataset("k700", "val")
    with pytest.raises(AnnotationError, match="needs --list FILE"):
        load_dataset("list", "test")


def test_list_dataset_and_user_train_list(tmp_path: Path) -> None:
    labels, listing = tmp_path / "labels.csv", tmp_path / "list.txt"
    labels.write_text("id,name\n0,left\n1,right\n")
    listing.write_text("left/a.mp4 0\nright/b.mp4 1\n")
    spec = load_dataset("list", "mine", list_file=listing, labels_file=labels)
    assert spec.class_names == ("left", "right") and len(spec.items) == 2
    assert spec.list_file == str(listing)

    listing.write_text("abseiling/x_000001_000011.mp4 0\n")
    train = load_dataset("k400", "train", list_file=listing)
    assert len(train.class_names) == 400 and train.items[0].label == 0


def test_kinetics_train_list_from_official_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,0wR5jVB-WPk,417,427,train\n"
        '"hurling (sport)",abcdefghijk,5,15,train\n'
        "zumba,zzzzzzzzzzz,0,10,val\n"
    )
    names = load_dataset("k400", "val").class_names
    items = kinetics_items_from_csv(csv_path, names, "train")
    assert items == [
        VideoItem("abseiling/0wR5jVB-WPk_000417_000427.mp4", 0),
        VideoItem("hurling_sport/abcdefghijk_000005_000015.mp4", names.index("hurling (sport)")),
    ]
    k600_csv = tmp_path / "k600.csv"
    k600_csv.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "backflip (human),bbbbbbbbbbb,1,11,train,0\n"
    )
    k600 = kinetics_items_from_csv(
        k600_csv, ["archery", "backflip (human)"], "train", dataset="k600"
    )
    assert k600 == [VideoItem("backflip_(human)/bbbbbbbbbbb_000001_000011.mp4", 1)]
    with pytest.raises(AnnotationError, match=r"k600.csv:2: label 'backflip \(human\)' is not a"):
        kinetics_items_from_csv(k600_csv, ["archery"], "train", dataset="k600")

    (tmp_path / "videos" / "abseiling").mkdir(parents=True)
    (tmp_path / "videos" / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4").write_bytes(b"x")
    present = kinetics_items_from_csv(csv_path, names, "train", root=tmp_path / "videos")
    assert [item.video_id for item in present] == ["abseiling/0wR5jVB-WPk_000417_000427.mp4"]

    with pytest.raises(AnnotationError, match="splits present: \\['train', 'val'\\]"):
        kinetics_items_from_csv(csv_path, names, "test")
