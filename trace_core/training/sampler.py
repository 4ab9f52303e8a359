"""Task-balanced sampling: every batch is a stratified mix of the tasks.

Each task's samples are shuffled and spread evenly over the epoch (a sample's sort key is
its rank within its task plus a random offset, over the task size), so every batch holds
the tasks in the proportions of the training file (M-BEIR's union file is upsampled to
balance them) instead of whatever a global shuffle happens to give. Mixed batches put
text and image candidates side by side as in-batch negatives, which teaches the modality
separation that mixed candidate pools need. The order is a deterministic function of
(seed, epoch), which exact resume relies on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class TaskBalancedSampler(Sampler[int]):
    """Yields every sample index once per epoch, tasks interleaved evenly."""

    def __init__(self, tasks: Sequence[int], seed: int) -> None:
        self.tasks = list(tasks)
        self.seed = seed
        self.epoch = 0
        self.by_task: dict[int, list[int]] = {}
        for i, t in enumerate(self.tasks):
            self.by_task.setdefault(t, []).append(i)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of an epoch (called by the data loader)."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The epoch's sample order."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        keyed: list[tuple[float, int]] = []
        for task in sorted(self.by_task):
            idx = list(self.by_task[task])
            rng.shuffle(idx)
            n = len(idx)
            keyed += [((rank + rng.random()) / n, i) for rank, i in enumerate(idx)]
        keyed.sort()
        return [i for _, i in keyed]

    def __iter__(self) -> Iterator[int]:
        yield from self.order()

    def __len__(self) -> int:
        return len(self.tasks)
