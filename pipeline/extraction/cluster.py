"""The dask cluster of ``mote extract --dask``: a local one with each worker pinned to a GPU,
or a connection to a running scheduler.

A local cluster's worker processes start with multiprocessing's ``spawn`` (dask's default
``distributed.worker.multiprocessing-method``; never fork a process that holds torch threads)
and, like the encoder processes, without the caller's ``__main__`` (``without_caller_main``), so
``--dask local`` works from ``python -`` and a REPL. A worker dask restarts later (one that ran
out of memory) starts as dask does it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from mote.pipeline.errors import ConfigError
from mote.pipeline.spawning import without_caller_main

LOCALHOST = "127.0.0.1"  # a local cluster is nobody else's business: listen on loopback only


class _DaskErrorLine(logging.Handler):
    """dask's errors as one 'dask: ...' line on stderr, like mote's own faults."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        print(f"dask: {text[:300]}", file=sys.stderr, flush=True)


def route_dask_logs() -> None:
    """dask's loggers through mote's output rules: errors one line each, its INFO chatter
    (scheduler and worker start-up, plugins) dropped. Its own set-up is not enough: when some
    library has given the root logger a handler first, ``distributed`` logs INFO through it."""
    log = logging.getLogger("distributed")
    log.handlers[:] = [_DaskErrorLine(logging.ERROR)]
    log.setLevel(logging.ERROR)
    log.propagate = False


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
    ``gpu_pins`` (inside a pinned worker, its GPU is ``cuda``). Returns once every worker has
    started."""
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
    with without_caller_main():
        return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.ERROR)


DASK_ADDRESSES = "local, local:N (N workers here) or a scheduler address such as tcp://host:8786"
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


def check_dask_address(address: str) -> None:
    """Refuse a ``--dask`` value that is neither a local cluster nor a scheduler address."""
    if address == "local":
        return
    if address.startswith("local:"):
        if not address[6:].isdigit() or int(address[6:]) < 1:
            raise ConfigError(f"--dask {address}: expected local:N with N >= 1 workers")
        return
    scheme, sep, rest = address.partition("://")
    host, colon, port = (rest if sep else address).rpartition(":")
    if (sep and scheme not in SCHEMES) or not colon or not host or not port.isdigit():
        raise ConfigError(f"--dask {address}: not a dask address; use {DASK_ADDRESSES}")


def dask_client(
    address: str, gpus: Sequence[int] = (), default_workers: int = 1, timeout: str = "20s"
):
    """``local`` / ``local:N``: start ``local_cluster``; else connect to the scheduler there.

    Returns the client and the cluster to close after it (None when connecting). A scheduler
    that does not answer is one line naming the address.
    """
    from dask.distributed import Client

    check_dask_address(address)
    route_dask_logs()
    if address == "local" or address.startswith("local:"):
        workers = int(address.split(":", 1)[1]) if ":" in address else default_workers
        cluster = local_cluster(workers, gpus)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=timeout), None
    except (OSError, TimeoutError) as error:
        raise ConfigError(
            f"--dask {address}: no dask scheduler answered ({' '.join(str(error).split())[:160]}); "
            "start `dask scheduler` there and its `dask worker`s, or use --dask local:N"
        ) from error
