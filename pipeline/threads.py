"""How many intra-op threads torch uses: the one thread policy every command runs under.

Why a policy: torch starts one OpenMP thread per core, and each op ends at a barrier where its
threads wait for each other. When a thread has no core to run on (another job, the command's
own decode workers, the other torchrun processes of the machine), every op waits for it; the
smaller the op, the more of its time is that wait. Measured on a shared 2-core machine, a
train-temporal epoch of mote-tiny's width (D=64) took 1.2 s with torch's 2 threads and 0.03 s
with one, 2.5 s and 0.11 s beside a CPU hog (``bench/threads.py``, docs/performance.md).

The policy (``policy_threads``), first rule that applies:

1. ``OMP_NUM_THREADS`` is set (by the user, or by torchrun for several processes): torch read it
   when it started, and mote never overrides it.
2. Decode workers and small models on the CPU (embedding width D <= ``SMALL_WIDTH``): one
   thread; their ops are too small to split.
3. Otherwise never more threads than cores: the cores this process may use (its affinity),
   split evenly between the ``LOCAL_WORLD_SIZE`` processes torchrun started on this machine,
   less one core per decode worker of the command.

Every command's ``run`` is decorated with ``command_threads()`` (the policy, and the caller's
count back when it returns: commands are also called as Python functions) and calls
``use_threads`` once it knows its device and model width.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

# Widest embedding whose CPU ops gain nothing from a second thread. bench/threads.py on 2 cores,
# a train-temporal epoch with 1 vs 2 threads: D=64, 128 and 256 ran 1.15-77x faster on one
# thread, idle or busy; D=512 (B/16) 1.55x faster on two when idle, 1.27x slower when busy.
SMALL_WIDTH = 256
WORKER_THREADS = 1  # a worker process is one of several that share the cores


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroups, SLURM)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def local_processes(env: Mapping[str, str]) -> int:
    """How many processes share this machine's cores: torchrun's ``LOCAL_WORLD_SIZE``, else 1."""
    try:
        return max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def policy_threads(
    device: torch.device | str = "cpu",
    *,
    width: int | None = None,
    workers: int = 0,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> int | None:
    """The torch thread count of a command on ``device`` whose model embeds ``width`` wide
    (None: not known yet) and that runs ``workers`` decode worker processes; None when
    ``OMP_NUM_THREADS`` decides. ``env`` and ``cores`` default to this process's."""
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        return None
    if torch.device(device).type == "cpu" and width is not None and width <= SMALL_WIDTH:
        return 1
    share = (cores or usable_cores()) // local_processes(env)
    return max(1, share - workers)


def set_threads(count: int | None) -> int:
    """Use ``count`` torch threads (None: leave the count); return the count in use."""
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()


def use_threads(
    device: torch.device | str = "cpu", *, width: int | None = None, workers: int = 0
) -> int:
    """Apply the policy for this workload (see ``policy_threads``); return the count in use."""
    return set_threads(policy_threads(device, width=width, workers=workers))


def use_worker_threads() -> int:
    """The policy in a worker process (a decode worker, a dask worker's CLIP), one of several
    that share the cores: one thread, unless ``OMP_NUM_THREADS`` says otherwise."""
    return set_threads(None if os.environ.get("OMP_NUM_THREADS") else WORKER_THREADS)


@contextmanager
def command_threads(
    device: torch.device | str = "cpu", *, width: int | None = None, workers: int = 0
) -> Iterator[int]:
    """Run a command under the policy (narrow it later with ``use_threads``); the caller's
    thread count is back when the block ends, however it ends."""
    previous = torch.get_num_threads()
    try:
        yield use_threads(device, width=width, workers=workers)
    finally:
        set_threads(previous)
