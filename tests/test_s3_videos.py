"""Videos read from object storage: real MP4 files (written with PyAV) uploaded to a real S3
server (moto) on loopback, reached through the AWS_* environment as a user would.

Extracting ``--root s3://...`` must store what extracting the same local files stores, fail a
missing, cut or broken object with the reason a local file gets, and leave no spilled copy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import S3_BUCKET

from mote.pipeline.errors import ConfigError, DecodeError
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.remote_videos import SPILL_PREFIX
from mote.stages import extract, info

# Listed and uploaded: not the empty folder (object storage has no empty folders).
BROKEN = ("missing", "empty", "random", "text", "truncated", "zero_frames")


@pytest.fixture
def spill_root(tmp_path, monkeypatch) -> Path:
    """The temp folder of this process and of the decode workers it starts."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def spills(folder: Path) -> list[str]:
    """The spill files and worker spill folders left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(SPILL_PREFIX))


def upload_videos(s3, root: Path, videos: list[str], prefix: str) -> str:
    """Copy the videos that exist locally to ``prefix``; the URL of the prefix."""
    for video in videos:
        if (root / video).is_file():
            s3.put_file(str(root / video), f"{S3_BUCKET}/{prefix}/{video}")
    return f"s3://{S3_BUCKET}/{prefix}"


def test_extract_from_s3_matches_local(s3, mixed_folder, tmp_path, spill_root, tiny_extract):
    good = list(mixed_folder.good[:4])
    videos = good + [f"broken/{name}.mp4" for name in BROKEN]
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"{video} {i % 2}\n" for i, video in enumerate(videos)))
    url = upload_videos(s3, mixed_folder.root, videos, "extract/videos")

    stores, summaries = {}, {}
    for name, root, workers in (("local", mixed_folder.root, 0), ("s3", url + "/", 1)):
        stores[name] = tmp_path / f"{name}.zarr"
        config = tiny_extract(
            mixed_folder,
            stores[name],
            root=root,
            list_file=list_file,
            decode_workers=workers,
            chunk_videos=4,
        )
        summaries[name] = extract.run(config)

    reasons = {
        name: {item["video"]: item["reason"] for item in summary["failures"]}
        for name, summary in summaries.items()
    }
    assert set(reasons["s3"]) == {f"broken/{name}.mp4" for name in BROKEN}
    assert reasons["s3"] == reasons["local"]
    assert reasons["s3"]["broken/missing.mp4"] == "file not found"
    assert reasons["s3"]["broken/truncated.mp4"].startswith("truncated: ")
    assert summaries["s3"]["n_done"] == len(good)

    local, remote = (zarr.open_group(stores[name], mode="r") for name in ("local", "s3"))
    for name in ("embeddings", "frame_indices", "status", "num_frames", "labels", "video_ids"):
        assert np.array_equal(local[name][:], remote[name][:]), name
    assert spills(spill_root) == []  # spills and the worker's spill folder are gone
    # info --verify --sample re-encodes stored videos from the same URL and finds them equal
    sampled = info.run(
        info.InfoConfig(store=stores["s3"], verify=True, sample=2, root=url, device="cpu")
    )["verify"]
    assert sampled["ok"] and len(sampled["sampled"]) == 2


def test_a_spilled_video_is_deleted_on_close_and_on_failure(s3, mixed_folder, spill_root):
    video = mixed_folder.good[0]
    broken = [f"broken/{name}.mp4" for name in BROKEN]
    url = upload_videos(s3, mixed_folder.root, [video, *broken], "spill")
    with open_video(f"{url}/{video}", "pyav") as source:
        assert len(spills(spill_root)) == 1
        assert source.get([0]).shape[-1] == 3
    assert spills(spill_root) == []
    for name in broken:
        with pytest.raises(DecodeError) as failed:
            open_video(f"{url}/{name}", "pyav")
        assert str(failed.value), name
        assert spills(spill_root) == [], name


def test_a_prefix_and_a_missing_key_fail_apart_with_one_get_each(s3, mixed_folder, spill_root):
    """The spill GETs first and asks what a missing key is only after the GET failed."""
    url = upload_videos(s3, mixed_folder.root, [mixed_folder.good[0]], "prefix")
    folder = url + "/" + mixed_folder.good[0].rsplit("/", 1)[0]  # a prefix, not an object
    for target, reason in ((folder, "a prefix holding"), (f"{url}/nothing.mp4", "file not found")):
        with pytest.raises(DecodeError, match=reason):
            open_video(target, "pyav")
    assert spills(spill_root) == []


def test_a_root_url_with_nothing_under_it_is_one_line(s3, tmp_path):
    (tmp_path / "l.txt").write_text("a.mp4 0\n")
    url = f"s3://{S3_BUCKET}/no/such/videos"
    config = extract.ExtractConfig(
        dataset="list", out=tmp_path / "o.zarr", root=url, list_file=tmp_path / "l.txt"
    )
    with pytest.raises(ConfigError, match=rf"^--root {url}: no objects under this prefix"):
        extract.run(config)
    assert not (tmp_path / "o.zarr").exists()


def test_the_video_list_stays_a_local_file(tmp_path):
    from mote.pipeline.config import build_config

    with pytest.raises(ConfigError, match=r"^--list s3://b/l.txt: takes a local path, not a URL"):
        build_config(
            extract.ExtractConfig, dataset="list", out=tmp_path / "o.zarr", list_file="s3://b/l.txt"
        )


def test_storage_options_reach_the_decode_workers(
    s3, s3_server, mixed_folder, tmp_path, monkeypatch, tiny_extract
):
    """With no endpoint in the environment, --storage-options alone lets a worker download."""
    videos = list(mixed_folder.good[:2])
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"{video} 0\n" for video in videos))
    url = upload_videos(s3, mixed_folder.root, videos, "options/videos")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config = tiny_extract(
        mixed_folder,
        tmp_path / "o.zarr",
        root=url,
        list_file=list_file,
        decode_workers=1,
        storage_options={"endpoint_url": s3_server},
    )
    summary = extract.run(config)
    assert summary["n_done"] == 2 and summary["failures"] == []


def test_kinetics_clips_present_are_those_listed_under_the_url(s3, tmp_path):
    from mote.pipeline.data.datasets import kinetics_dataset

    s3.pipe_file(f"{S3_BUCKET}/k400/abseiling/0wR5jVB-WPk_000417_000427.mp4", b"x")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,0wR5jVB-WPk,417,427,train\n"
        "zumba,zzzzzzzzzzz,0,10,train\n"
    )
    dataset = kinetics_dataset(csv_path, "train", f"s3://{S3_BUCKET}/k400")
    assert [item.video_id for item in dataset.items] == ["abseiling/0wR5jVB-WPk_000417_000427.mp4"]


def test_predict_labels_videos_at_urls_as_it_labels_local_files(
    s3, imported_run, mixed_folder, spill_root
):
    from mote.stages import predict

    videos = [*mixed_folder.good[:2], "broken/truncated.mp4"]
    url = upload_videos(s3, mixed_folder.root, videos, "predict")
    folder = videos[0].rsplit("/", 1)[0]
    results = {}
    for name, given in {
        "local": [mixed_folder.root / video for video in videos] + [mixed_folder.root / "no.mp4"],
        "s3": [f"{url}/{folder}", f"{url}/{videos[2]}", f"{url}/no.mp4"],
    }.items():
        config = predict.PredictConfig(
            run=imported_run[0], videos=tuple(given), device="cpu", decode_workers=1
        )
        results[name] = predict.run(config)["videos"]
    remote = [row.pop("video") for row in results["s3"]]
    assert remote == [f"{url}/{video}" for video in videos] + [f"{url}/no.mp4"]
    for row in results["local"]:
        row.pop("video")
    assert results["s3"] == results["local"]
    assert results["s3"][3]["error"] == "file not found"
    assert results["s3"][2]["error"].startswith("truncated: ")
    assert spills(spill_root) == []


def test_finetune_e2e_from_s3_matches_local(s3, mixed_folder, tmp_path, spill_root):
    """Same weights, the same skipped videos with the same reasons, no spill left."""
    from safetensors.torch import load_file
    from test_finetune_e2e import COMMON

    from mote.pipeline.runs.run_folder import RunFolder
    from mote.stages import finetune_e2e

    videos = [*mixed_folder.good[:4], "broken/missing.mp4", "broken/truncated.mp4"]
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"{video} {i % 2}\n" for i, video in enumerate(videos)))
    url = upload_videos(s3, mixed_folder.root, videos, "finetune/videos")
    runs = {}
    for name, root in (("local", mixed_folder.root), ("s3", url)):
        runs[name] = tmp_path / name
        settings = {**COMMON, "epochs": 1, "batch_size": 4, "micro_batches": 1}
        finetune_e2e.run(
            finetune_e2e.FinetuneConfig(
                **settings,
                out=runs[name],
                root=root,
                list_file=list_file,
                labels_file=mixed_folder.labels_file,
                val_list=list_file,
            )
        )
    local, remote = (load_file(runs[name] / "model.safetensors") for name in ("local", "s3"))
    assert local.keys() == remote.keys()
    assert all(torch.equal(local[key], remote[key]) for key in local)
    failures = {name: RunFolder(runs[name]).read_failures() for name in runs}
    assert failures["s3"] == failures["local"]
    assert {row["video"] for row in failures["s3"]} == set(videos[4:])
    assert spills(spill_root) == []
