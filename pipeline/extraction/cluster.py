"""The dask cluster of ``mote extract --dask``: a local one with each worker pinned to a GPU,
or a connection to a running scheduler."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

LOCALHOST = "127.0.0.1"  # a local cluster is nobody else's business: listen on loopback only


def gpu_pins(workers: int, gpus: Sequence[int]) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each local worker: worker i gets ``gpus[i mod G]``.

    ``gpus`` are indices as this process sees them; under a ``CUDA_VISIBLE_DEVICES`` of its own
    they name its entries, so a worker sees the same physical GPU. No GPUs: no pinning (None).
    """
    if not gpus:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in visible.split(",")] if visible else None
    picks = [gpus[i % len(gpus)] for i in range(workers)]
    return [names[gpu] if names else str(gpu) for gpu in picks]


def local_cluster(workers: int, gpus: Sequence[int] = ()):
    """A cluster of ``workers`` one-thread worker processes on this machine, each pinned by
    ``gpu_pins`` (inside a pinned worker, its GPU is ``cuda``)."""
    from dask.distributed import Nanny, Scheduler, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    log = logging.getLogger("distributed")
    memory = parse_memory_limit("auto", 1, workers, logger=log)  # as LocalCluster shares it
    spec = {}
    for i, pin in enumerate(gpu_pins(workers, gpus)):
        env = {} if pin is None else {"CUDA_VISIBLE_DEVICES": pin}
        options = dict(nthreads=1, host=LOCALHOST, memory_limit=memory, dashboard=False, env=env)
        spec[i] = {"cls": Nanny, "options": {**options, "silence_logs": logging.ERROR}}
    scheduler = {
        "cls": Scheduler,
        "options": {"host": LOCALHOST, "port": 0, "dashboard_address": f"{LOCALHOST}:0"},
    }
    return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.ERROR)


def dask_client(address: str, gpus: Sequence[int] = (), default_workers: int = 1):
    """``local`` / ``local:N``: start ``local_cluster``; else connect to the scheduler there.

    Returns the client and the cluster to close after it (None when connecting).
    """
    from dask.distributed import Client

    if address == "local" or address.startswith("local:"):
        workers = int(address.split(":", 1)[1]) if ":" in address else default_workers
        cluster = local_cluster(workers, gpus)
        return Client(cluster), cluster
    return Client(address), None
