"""`mote extract --dask`: a real dask LocalCluster writes the same store as one process."""

from __future__ import annotations

import numpy as np
import zarr

from mote.stages import extract


def test_local_cluster_store_equals_single_process_store(mixed_folder, tmp_path, tiny_extract):
    common = dict(chunk_videos=4, batch_size=16)
    single = extract.run(
        tiny_extract(mixed_folder, tmp_path / "one.zarr", decode_workers=1, **common)
    )
    spread = extract.run(
        tiny_extract(mixed_folder, tmp_path / "dask.zarr", dask="local:2", **common)
    )

    assert spread["n_done"] == single["n_done"] == len(mixed_folder.good)
    workers = spread["devices"]  # one row per dask worker that took a chunk
    assert {row["device"] for row in workers} == {"cpu"}  # no GPU here: no pinning, the CPU
    assert all(row["worker"].startswith("tcp://127.0.0.1:") for row in workers)
    assert sum(row["videos"] for row in workers) == spread["newly_done"]
    assert {f["video"] for f in spread["failures"]} == set(mixed_folder.broken)
    one = zarr.open_group(tmp_path / "one.zarr", mode="r")
    many = zarr.open_group(tmp_path / "dask.zarr", mode="r")
    for name in ("status", "labels", "frame_indices", "num_frames", "failure_reason"):
        np.testing.assert_array_equal(one[name][:], many[name][:], err_msg=name)
    # fixed-shape batches: the embeddings do not depend on who encoded them or with whom
    np.testing.assert_array_equal(one["embeddings"][:], many["embeddings"][:])
