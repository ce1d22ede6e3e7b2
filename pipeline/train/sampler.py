"""A shared-seed batch sampler: W processes see exactly the data of one with the same batch.

Every rank draws the same permutation from (seed, epoch), cuts the same global batches (the last
partial one kept, spec 7), splits each into ``micro_batches`` contiguous micro-batches and takes
its own consecutive ``micro_batches / world_size`` of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mote.pipeline.errors import ConfigError

REFERENCE_PROCESSES = 3  # the reference trains on 3 GPUs, each drawing its own routing (spec 7)
MICRO_BATCHES_RULE = (
    "the smallest multiple of the process count that is at least 3 (the reference's 3 GPUs, "
    "each with its own routing draw): 3 on 1 or 3 processes, 4 on 2 or 4, 8 on 8"
)


def default_micro_batches(world_size: int) -> int:
    """``MICRO_BATCHES_RULE``: at least the reference's draws per step, an equal whole number
    of micro-batches on every process."""
    return -(-REFERENCE_PROCESSES // world_size) * world_size


def check_micro_batches(micro_batches: int, world_size: int) -> None:
    """Each rank needs the same whole number of micro-batches per step."""
    if micro_batches < 1 or micro_batches % world_size:
        raise ConfigError(
            f"--micro-batches {micro_batches} is not a positive multiple of the {world_size} "
            f"processes (torchrun --nproc-per-node); use a multiple of {world_size}"
        )


def micro_batch_bounds(n: int, micro_batches: int) -> np.ndarray:
    """Start offsets of the ``micro_batches`` contiguous parts of n items, plus n at the end
    (torch.tensor_split's sizes: the first n % M parts one longer)."""
    q, r = divmod(n, micro_batches)
    sizes = [q + 1] * r + [q] * (micro_batches - r)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def rank_share(n: int, micro_batches: int, rank: int, world_size: int) -> slice:
    """The contiguous items of a global batch of n that ``rank`` trains on.

    Re-splitting the share into micro_batches / world_size parts gives back exactly the
    global micro-batches of this rank."""
    per_rank = micro_batches // world_size
    bounds = micro_batch_bounds(n, micro_batches)
    return slice(int(bounds[rank * per_rank]), int(bounds[(rank + 1) * per_rank]))


class ShardedBatchSampler:
    """Yields this rank's share (a list of indices into range(size)) of each global batch.

    Usable as a DataLoader ``batch_sampler``; call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        micro_batches: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        check_micro_batches(micro_batches, world_size)
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.size, self.batch_size = size, batch_size
        self.micro_batches, self.rank, self.world_size = micro_batches, rank, world_size
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> np.ndarray:
        """The epoch's order, the same on every rank: it depends on (seed, epoch) only."""
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def global_batches(self) -> list[np.ndarray]:
        order = self.permutation()
        return [order[s : s + self.batch_size] for s in range(0, self.size, self.batch_size)]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def steps(self) -> Iterator[tuple[np.ndarray, int]]:
        """Per step: this rank's share of the global batch, and the global batch's size
        (which every rank knows, so none has to ask the others)."""
        for batch in self.global_batches():
            share = rank_share(len(batch), self.micro_batches, self.rank, self.world_size)
            yield batch[share], len(batch)

    def __iter__(self) -> Iterator[list[int]]:
        for share, _ in self.steps():
            yield share.tolist()
