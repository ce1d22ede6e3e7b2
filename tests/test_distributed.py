"""`mote extract --dask`: a real dask LocalCluster writes the same store as one process."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest
import zarr

from mote.pipeline.errors import ConfigError
from mote.pipeline.extraction.cluster import check_dask_address, dask_client
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


@pytest.mark.parametrize("address", ["bogus", "local:0", "local:x", "http://h:1", "tcp://h", ":80"])
def test_a_bad_dask_address_is_one_line(address):
    with pytest.raises(ConfigError, match=rf"--dask {re.escape(address)}: "):
        check_dask_address(address)


def test_good_dask_addresses_pass():
    for address in ("local", "local:3", "tcp://127.0.0.1:8786", "10.0.0.2:8786", "tls://h:1"):
        check_dask_address(address)


def test_a_scheduler_that_does_not_answer_is_one_line():
    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=f"tcp://127.0.0.1:{port}: no dask scheduler answered"):
        dask_client(f"tcp://127.0.0.1:{port}", timeout="2s")
