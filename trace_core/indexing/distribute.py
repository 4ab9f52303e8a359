"""A distributed export: which rank encodes which shard, and the barriers around the merge.

``trace export`` launched by ``torch.distributed.run`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, read through
:mod:`trace_core.ranks`) runs one process per rank.
Shards are the unit of work: every rank derives the same list of shards from the data, each
encodes the ones :func:`assign_units` gives it, and rank 0 writes the manifests after a
barrier. Without those variables the export is one process and no process group is made.

The barriers only synchronise (no tensors move), so the group uses ``gloo`` on CPUs and GPUs
alike; rank 0 reads the other ranks' shard files, so on several nodes the embeddings folder
must be on a filesystem every node sees.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from trace_core import ranks as process

log = logging.getLogger(__name__)
Barrier = Callable[[], None]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the export: rank, number of ranks, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the manifests."""
        return self.rank == 0


def current_ranks() -> Ranks:
    """This process's ranks, from :mod:`trace_core.ranks` (a single process when no launcher set them).

    Raises:
        ValueError: a rank outside ``[0, WORLD_SIZE)`` or a world size below 1.
    """
    return checked(Ranks(process.rank(), process.world_size(), process.local_rank()))


def checked(ranks: Ranks) -> Ranks:
    """``ranks`` when consistent, else a ValueError naming the launcher variable at fault."""
    if ranks.world_size < 1:
        raise ValueError(f"environment variable WORLD_SIZE={ranks.world_size}: must be >= 1")
    if not 0 <= ranks.rank < ranks.world_size:
        raise ValueError(f"environment variable RANK={ranks.rank}: must be in [0, WORLD_SIZE={ranks.world_size})")
    if ranks.local_rank < 0:
        raise ValueError(f"environment variable LOCAL_RANK={ranks.local_rank}: must be >= 0")
    return ranks


def assign_units(sizes: Sequence[int], world_size: int) -> list[int]:
    """The rank of each unit of work, balancing the rows per rank.

    Longest first: units in decreasing size (ties by position) each go to the rank with the
    fewest rows so far (ties to the lowest rank). Deterministic, so every rank computes the
    same assignment from the same sizes without talking to the others.

    Args:
        sizes: rows of each unit (a shard).
        world_size: number of ranks (>= 1).

    Returns:
        One rank per unit, in the order of ``sizes``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owner = [0] * len(sizes)
    loads = [(0, r) for r in range(world_size)]  # (rows so far, rank): a min-heap
    for unit in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rows, rank = heapq.heappop(loads)
        owner[unit] = rank
        heapq.heappush(loads, (rows + sizes[unit], rank))
    return owner


def device_for(choice: str, ranks: Ranks, cuda_available: bool) -> str:
    """Device of this rank: ``auto`` picks CUDA when present; each rank takes GPU ``LOCAL_RANK``."""
    device = ("cuda" if cuda_available else "cpu") if choice == "auto" else choice
    if device == "cuda" and ranks.world_size > 1:
        return f"cuda:{ranks.local_rank}"
    return device


@contextmanager
def process_group(ranks: Ranks, timeout_s: float) -> Iterator[Barrier]:
    """Yield a barrier over the ranks (a no-op for one process).

    A ``gloo`` group is created when none exists and destroyed on exit; an existing group
    (made by the caller) is used as it is and must have ``ranks.world_size`` members.
    ``timeout_s`` bounds how long a rank waits at a barrier for the slowest rank.
    """
    if ranks.world_size == 1:
        yield lambda: None
        return
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != ranks.world_size:
            raise ValueError(f"process group has {dist.get_world_size()} ranks, WORLD_SIZE says {ranks.world_size}")
        yield dist.barrier
        return
    dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=timedelta(seconds=timeout_s))
    log.info("export rank %d of %d (gloo group)", ranks.rank, ranks.world_size)
    try:
        yield dist.barrier
    finally:
        dist.destroy_process_group()
