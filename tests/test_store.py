"""The feature store on real disk: layout, resume, chunk merging, write order, plain readers."""

from __future__ import annotations

import json
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from mote.cache_schema import v1
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.spec import StoreSpec, VideoResult
from mote.cache_schema.store_errors import StoreCorrupt, StoreError, StoreMismatch, StoreNotFound

FIXTURE = Path(__file__).parent / "data" / "store_v1_root_attrs.json"
CLASSES = ("circle moving left", "square moving right", "hurling (sport)")
N_VIDEOS, CHUNK = 10, 4  # three chunks: 0-3, 4-7 and a short one, 8-9


def make_spec(**changes) -> StoreSpec:
    """The small spec whose root attributes are the v1 fixture."""
    spec = StoreSpec(
        model="mote-tiny",
        pretrained="none",
        weights_id="random:seed=0",
        dim=16,
        frames=4,
        clips=3,
        crops=1,
        sampling="eval",
        sampling_seed=0,
        preprocess={
            "size": 64,
            "mean": (0.48145466, 0.4578275, 0.40821073),
            "std": (0.26862954, 0.26130258, 0.27577711),
            "interpolation": "bicubic",
        },
        dataset="list",
        split="val",
        class_names=CLASSES,
        tool_version="0.1.0",
    )
    return replace(spec, **changes)


def video_list(n: int = N_VIDEOS) -> tuple[list[str], np.ndarray]:
    ids = [f"shapes/clip_{i:03d}.mp4" for i in range(n)]
    return ids, np.arange(n, dtype=np.int32) % len(CLASSES)


def text_bank(spec: StoreSpec) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(len(spec.class_names), spec.dim))


def new_store(path: Path, spec: StoreSpec | None = None, n: int = N_VIDEOS) -> FeatureStore:
    spec = spec or make_spec()
    ids, labels = video_list(n)
    return FeatureStore.create(path, spec, ids, labels, text_bank(spec), chunk_videos=CHUNK)


def done(spec: StoreSpec, index: int) -> VideoResult:
    """A deterministic successful result for video ``index``."""
    rng = np.random.default_rng(1000 + index)
    emb = rng.normal(size=(spec.views, spec.frames, spec.dim)).astype(np.float16)
    frames = np.tile(np.arange(spec.frames, dtype=np.int32) * 3, (spec.views, 1))
    return VideoResult(index, emb, frames, num_frames=30 + index)


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_create_then_open_round_trips(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    assert (store.n_videos, store.n_chunks, store.chunk_videos) == (10, 3, 4)
    assert store.chunk_range(2) == (8, 10) and store.chunk_of(9) == 2 and store.chunk_of(4) == 1
    assert store.todo().tolist() == list(range(10))
    assert store.counts() == {"done": 0, "failed": 0, "pending": 10}
    store.write_chunk(2, [done(spec, 8), done(spec, 9)])

    again = FeatureStore.open(tmp_path / "s.zarr")
    ids, labels = video_list()
    assert again.spec == spec and again.spec.layout == "3x1" and again.spec.views == 3
    assert again.video_ids == tuple(ids)
    np.testing.assert_array_equal(again.labels, labels)
    np.testing.assert_array_equal(again.text_embeddings, text_bank(spec).astype(np.float32))
    assert again.done_mask().tolist() == [False] * 8 + [True, True]
    np.testing.assert_array_equal(
        again.read_embeddings([9, 8]), [done(spec, 9).embeddings, done(spec, 8).embeddings]
    )
    num_frames = zarr.open_array(str(tmp_path / "s.zarr" / "num_frames"), mode="r")
    assert num_frames[7:10].tolist() == [-1, 38, 39]
    assert (again.read_frame_indices([0]) == -1).all()
    idx, emb, lab = again.read_done()
    assert idx.tolist() == [8, 9] and emb.dtype == np.float16 and lab.tolist() == [2, 0]


def test_root_attributes_and_arrays_match_the_v1_fixture(tmp_path: Path) -> None:
    new_store(tmp_path / "s.zarr")
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group.attrs.asdict() == json.loads(FIXTURE.read_text())
    assert list(group.attrs.asdict()) == list(v1.ROOT_ATTRS)
    for name, a in v1.ARRAYS.items():
        arr = group[name]
        assert tuple(arr.metadata.dimension_names) == a.dims, name
        if a.dtype != "str":
            assert arr.dtype == np.dtype(a.dtype), name
        if a.per_video:
            assert arr.chunks[0] == CHUNK, name
    assert group["embeddings"].chunks == (CHUNK, 3, 4, 16)


def test_write_chunk_merges_a_partial_chunk_then_the_rest(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    store.write_chunk(0, [done(spec, 0), VideoResult.failure(2, "file not found")])
    store.write_chunk(0, [done(spec, 1), done(spec, 3)])
    assert store.done_mask()[:4].tolist() == [True, True, False, True]
    assert store.failed_mask()[:4].tolist() == [False, False, True, False]
    for i in (0, 1, 3):
        np.testing.assert_array_equal(store.read_embeddings([i])[0], done(spec, i).embeddings)
    assert store.failures() == [{"video": "shapes/clip_002.mp4", "reason": "file not found"}]

    # A retry that succeeds clears the reason; a done video that now fails loses its data.
    assert store.todo().tolist() == list(range(4, 10))
    assert store.todo(retry_failed=True).tolist() == [2, *range(4, 10)]
    store.write_chunk(0, [done(spec, 2), VideoResult.failure(0, "no frames", num_frames=0)])
    assert store.done_mask()[:4].tolist() == [False, True, True, True]
    assert store.failed_mask()[:4].tolist() == [True, False, False, False]
    assert not store.read_embeddings([0]).any() and (store.read_frame_indices([0]) == -1).all()
    np.testing.assert_array_equal(store.read_embeddings([1])[0], done(spec, 1).embeddings)
    assert store.failures() == [{"video": "shapes/clip_000.mp4", "reason": "no frames"}]


def test_a_whole_chunk_write_reads_no_stored_data(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    store.write_chunk(0, [done(spec, 0)])
    store.write_chunk(2, [done(spec, 8)])
    for chunk in ("0", "2"):  # damage the stored embeddings chunk: reading it now fails
        (tmp_path / "s.zarr" / "embeddings" / "c" / chunk / "0" / "0" / "0").write_bytes(b"x" * 64)
    with pytest.raises(StoreCorrupt, match="array 'embeddings' chunk 0 .* fails its checksum"):
        store.write_chunk(0, [done(spec, 1)])  # a partial write must merge, so it reads
    store.write_chunk(0, [done(spec, i) for i in range(4)])
    store.write_chunk(2, [done(spec, 8), done(spec, 9)])  # the short last chunk too
    idx, emb, _ = store.read_done()
    assert idx.tolist() == [0, 1, 2, 3, 8, 9]
    np.testing.assert_array_equal(emb, np.stack([done(spec, i).embeddings for i in idx]))


def test_write_chunk_rejects_results_it_cannot_store(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    with pytest.raises(ValueError, match="video 4 is outside chunk 0"):
        store.write_chunk(0, [done(spec, 0), done(spec, 4)])
    short = replace(done(spec, 1), embeddings=np.zeros((3, 4, 8), np.float16))
    with pytest.raises(ValueError, match=r"embeddings must be \(3, 4, 16\)"):
        store.write_chunk(0, [short])
    nan = done(spec, 1)
    nan.embeddings[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.write_chunk(0, [nan])
    with pytest.raises(ValueError, match="two results for video 1"):
        store.write_chunk(0, [done(spec, 1), done(spec, 1)])
    assert store.todo().tolist() == list(range(10))
    read_only = FeatureStore.open(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="read-only"):
        read_only.write_chunk(0, [done(spec, 0)])


def test_status_is_written_after_the_data(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    blocker = tmp_path / "s.zarr" / "status" / "c" / "0"
    pending = blocker.read_bytes()  # written at creation: the chunk's videos all pending
    blocker.unlink()
    blocker.mkdir()  # the status chunk cannot be written: a "crash" at the last step
    with pytest.raises(OSError):
        store.write_chunk(0, [done(spec, i) for i in range(4)])
    blocker.rmdir()
    blocker.write_bytes(pending)  # what the crash leaves: the old chunk (zarr renames into place)
    again = FeatureStore.open(tmp_path / "s.zarr")
    assert again.counts()["pending"] == 10  # never marked done, though the data are there
    np.testing.assert_array_equal(again.read_embeddings([2])[0], done(spec, 2).embeddings)
    assert again.todo().tolist() == list(range(10))


def test_a_rewritten_done_video_is_pending_until_its_new_data_is_written(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    store.write_chunk(1, [done(spec, i) for i in range(4, 8)])
    chunk_file = tmp_path / "s.zarr" / "embeddings" / "c" / "1" / "0" / "0" / "0"
    chunk_file.unlink()
    chunk_file.mkdir()  # the embeddings write of the re-extraction fails
    redo = [replace(done(spec, i), embeddings=-done(spec, i).embeddings) for i in range(4, 8)]
    with pytest.raises(OSError):
        store.write_chunk(1, redo)
    assert store.todo().tolist() == list(range(10))


@pytest.mark.parametrize(
    ("key", "asked"),
    [
        ("model", "ViT-B-16"),
        ("weights_id", "openai"),
        ("frames", 16),
        ("sampling", "train"),
        ("views", "4x3"),
    ],
)
def test_open_names_both_values_of_a_mismatch(tmp_path: Path, key: str, asked: object) -> None:
    new_store(tmp_path / "s.zarr")
    stored = json.loads(FIXTURE.read_text())[key]
    with pytest.raises(StoreMismatch) as err:
        FeatureStore.open(tmp_path / "s.zarr", expect={key: asked})
    message = str(err.value)
    assert f"{key} is {stored!r}" in message and f"asked for {asked!r}" in message
    assert str(tmp_path / "s.zarr") in message and "NEW.zarr" in message
    assert "--overwrite" not in message  # other runs may use this store: never suggest it


def test_schema_version_is_checked_before_anything_else(tmp_path: Path) -> None:
    new_store(tmp_path / "s.zarr")
    zarr.open_group(tmp_path / "s.zarr", mode="r+").attrs["schema_version"] = 2
    with pytest.raises(StoreMismatch, match=r"mote.features v2 .* reads mote.features v1"):
        FeatureStore.open(tmp_path / "s.zarr", expect={"model": "ViT-L-14"})
    zarr.create_group(tmp_path / "plain.zarr")
    with pytest.raises(StoreMismatch, match="not a mote feature store"):
        FeatureStore.open(tmp_path / "plain.zarr")


def test_missing_or_damaged_stores_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no feature store here"):
        FeatureStore.open(tmp_path / "nowhere.zarr")
    assert issubclass(StoreNotFound, FileNotFoundError) and issubclass(StoreNotFound, StoreError)
    new_store(tmp_path / "s.zarr")
    shutil.rmtree(tmp_path / "s.zarr" / "status")
    with pytest.raises(StoreCorrupt, match="array 'status' is missing"):
        FeatureStore.open(tmp_path / "s.zarr")


def test_open_or_create_resumes_only_the_same_store(tmp_path: Path) -> None:
    spec, path = make_spec(), tmp_path / "s.zarr"
    ids, labels = video_list()
    store = FeatureStore.open_or_create(path, spec, ids, labels, text_bank(spec), CHUNK)
    store.write_chunk(0, [done(spec, 0)])
    resumed = FeatureStore.open_or_create(path, spec, ids, labels, text_bank(spec), CHUNK)
    assert resumed.todo().tolist() == list(range(1, 10))

    renamed = [*ids[:5], "shapes/other.mp4", *ids[6:]]
    with pytest.raises(StoreMismatch, match="video 5 is 'shapes/clip_005.mp4' in the store but"):
        FeatureStore.open_or_create(path, spec, renamed, labels, text_bank(spec))
    with pytest.raises(StoreMismatch, match="lists 10 videos but the dataset has 9"):
        FeatureStore.open_or_create(path, spec, ids[:9], labels[:9], text_bank(spec))
    relabelled = labels.copy()
    relabelled[3] = (relabelled[3] + 1) % 3
    with pytest.raises(StoreMismatch, match="clip_003.mp4' has label 0 in the store but 1"):
        FeatureStore.open_or_create(path, spec, ids, relabelled, text_bank(spec))
    with pytest.raises(StoreMismatch, match="frames is 4 in the store but 8 now.*--overwrite"):
        FeatureStore.open_or_create(path, make_spec(frames=8), ids, labels, text_bank(spec))


def test_create_never_deletes_what_is_not_a_store(tmp_path: Path) -> None:
    new_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        new_store(tmp_path / "s.zarr")
    keep = tmp_path / "home" / "thesis.tex"
    keep.parent.mkdir()
    keep.write_text("precious")
    spec = make_spec()
    with pytest.raises(StoreError, match="not a Zarr store"):
        FeatureStore.create(keep.parent, spec, *video_list(), text_bank(spec), overwrite=True)
    assert keep.read_text() == "precious"
    store = FeatureStore.create(
        tmp_path / "s.zarr", spec, *video_list(4), text_bank(spec), overwrite=True
    )
    assert store.n_videos == 4


def test_store_reads_with_plain_zarr_and_dask(tmp_path: Path) -> None:
    spec, path = make_spec(), tmp_path / "s.zarr"
    store = new_store(path, spec)
    store.write_chunk(1, [done(spec, i) for i in range(4, 8)])
    store.write_chunk(2, [done(spec, 8), VideoResult.failure(9, "cannot open: moov atom")])
    store.consolidate()

    group = zarr.open_group(path, mode="r")  # no mote below this line
    assert group.attrs["schema"] == "mote.features" and group.attrs["views"] == "3x1"
    status = group["status"][:]
    ok = np.flatnonzero(status == 1)
    assert ok.tolist() == [4, 5, 6, 7, 8]
    assert group["video_ids"][9] == "shapes/clip_009.mp4"
    assert group["failure_reason"][9] == "cannot open: moov atom"
    emb = da.from_zarr(str(path), component="embeddings")
    assert emb.shape == (10, 3, 4, 16) and emb.chunksize[0] == CHUNK
    means = emb[ok].astype(np.float32).mean(axis=(1, 2)).compute()
    want = np.stack([done(spec, i).embeddings.astype(np.float32).mean(axis=(0, 1)) for i in ok])
    np.testing.assert_allclose(means, want, rtol=1e-6)


def test_same_data_in_any_chunk_order_gives_byte_identical_stores(tmp_path: Path) -> None:
    spec = make_spec()
    results = [done(spec, i) for i in range(10)]
    results[6] = VideoResult.failure(6, "frame 212 of 300 could not be decoded (truncated file?)")
    first = new_store(tmp_path / "a.zarr", spec)
    for chunk in range(3):
        start, stop = first.chunk_range(chunk)
        first.write_chunk(chunk, results[start:stop])
    second = new_store(tmp_path / "b.zarr", spec)
    second.write_chunk(2, results[8:])
    second.write_chunk(0, [results[3], VideoResult.failure(1, "temporary error")])
    second.write_chunk(1, results[4:8])
    second.write_chunk(0, [results[0], results[1], results[2]])
    for store in (first, second):
        store.consolidate()
    a, b = tree(tmp_path / "a.zarr"), tree(tmp_path / "b.zarr")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_store_is_at_most_two_percent_larger_than_raw_fp16(tmp_path: Path) -> None:
    spec = make_spec(dim=512, frames=8)
    n = 64
    ids, labels = video_list(n)
    store = FeatureStore.create(tmp_path / "s.zarr", spec, ids, labels, text_bank(spec))
    rng = np.random.default_rng(0)
    scale = rng.lognormal(-1.0, 0.5, size=spec.dim)  # CLIP outputs spread unevenly per dimension
    for chunk in range(store.n_chunks):
        start, stop = store.chunk_range(chunk)
        shared = rng.normal(size=(stop - start, 1, 1, spec.dim))
        emb = ((shared + 0.3 * rng.normal(size=(stop - start, 3, 8, spec.dim))) * scale).astype(
            np.float16
        )
        frames = np.tile(np.arange(8, dtype=np.int32), (3, 1))
        store.write_chunk(
            chunk, [VideoResult(start + k, emb[k], frames, 100) for k in range(stop - start)]
        )
    raw = n * spec.views * spec.frames * spec.dim * 2
    assert store.summary()["n_done"] == n
    assert store.bytes_on_disk() <= 1.02 * raw


def test_summary_lists_counts_and_failures(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    store.write_chunk(0, [done(spec, 0), VideoResult.failure(3, "empty file (0 bytes)")])
    store.write_chunk(2, [VideoResult.failure(8, "file not found")])
    summary = json.loads(json.dumps(store.summary()))
    assert {k: summary[k] for k in ("n_videos", "n_done", "n_failed", "n_pending")} == {
        "n_videos": 10,
        "n_done": 1,
        "n_failed": 2,
        "n_pending": 7,
    }
    assert summary["failures"] == [
        {"video": "shapes/clip_003.mp4", "reason": "empty file (0 bytes)"},
        {"video": "shapes/clip_008.mp4", "reason": "file not found"},
    ]
    assert summary["schema_version"] == 1 and summary["views"] == "3x1"
    assert (summary["model"], summary["dim"], summary["frames"], summary["classes"]) == (
        "mote-tiny",
        16,
        4,
        3,
    )
    assert summary["bytes_on_disk"] > 0 and summary["chunk_videos"] == CHUNK


def test_separate_writers_fill_separate_chunks_at_once(tmp_path: Path) -> None:
    spec = make_spec()
    store = new_store(tmp_path / "s.zarr", spec)
    writers = [pickle.loads(pickle.dumps(store)) for _ in range(3)]  # as dask would ship them

    def fill(chunk: int) -> None:
        start, stop = store.chunk_range(chunk)
        writers[chunk].write_chunk(chunk, [done(spec, i) for i in range(start, stop)])

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(fill, range(3)))
    assert store.done_mask().all()
    idx, emb, _ = store.read_done()
    np.testing.assert_array_equal(emb, np.stack([done(spec, i).embeddings for i in idx]))


def test_every_array_of_a_new_store_ends_its_chunks_with_a_crc32c(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.zarr")
    for name in v1.ARRAYS:
        meta = json.loads((tmp_path / "s.zarr" / name / "zarr.json").read_text())
        assert [c["name"] for c in meta["codecs"]][-2:] == ["zstd", "crc32c"], name
    assert store.has_checksums()


def test_a_v1_store_without_checksums_stays_readable(tmp_path: Path, monkeypatch) -> None:
    from zarr.codecs import ZstdCodec

    from mote.cache_schema import feature_store as store_module
    from mote.cache_schema.verify import verify

    monkeypatch.setattr(store_module, "CHUNK_CODECS", (ZstdCodec(level=1, checksum=False),))
    spec = make_spec()
    old = new_store(tmp_path / "old.zarr", spec)
    old.write_chunk(1, [done(spec, i) for i in range(4, 8)])
    monkeypatch.undo()
    again = FeatureStore.open(tmp_path / "old.zarr")
    assert not again.has_checksums() and again.summary()["checksums"] is False
    idx, emb, _ = again.read_done()
    assert idx.tolist() == [4, 5, 6, 7]
    np.testing.assert_array_equal(emb[0], done(spec, 4).embeddings)
    assert verify(again).ok
    again.chunk_file("embeddings", 1).unlink()  # a missing file is still caught without checksums
    with pytest.raises(StoreCorrupt, match="array 'embeddings' chunk 1 .* is missing"):
        FeatureStore.open(tmp_path / "old.zarr").read_done()
