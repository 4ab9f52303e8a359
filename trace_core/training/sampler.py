"""Task-balanced batch sampling: every batch holds samples of one task.

In-batch negatives then share the positives' modality (a text->image query competes with
images, not with an easy mix of texts and images), and every task contributes batches in
proportion to its share of the training file (M-BEIR's union file is already upsampled).
Order is a deterministic function of (seed, epoch), which exact resume relies on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class TaskBatchSampler(Sampler[int]):
    """Yields sample indices so that each consecutive run of ``batch_size`` is one task.

    A task whose count is not a multiple of ``batch_size`` is topped up with repeats of
    its own (shuffled) samples, so batches never mix tasks.
    """

    def __init__(self, tasks: Sequence[int], batch_size: int, seed: int) -> None:
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.by_task: dict[int, list[int]] = {}
        for i, t in enumerate(self.tasks):
            self.by_task.setdefault(t, []).append(i)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of an epoch (called by the data loader)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The epoch's batches, each of one task, in a shuffled order."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        out: list[list[int]] = []
        for task in sorted(self.by_task):
            idx = list(self.by_task[task])
            rng.shuffle(idx)
            short = -len(idx) % self.batch_size
            idx += [idx[i % len(idx)] for i in range(short)]
            out += [idx[s : s + self.batch_size] for s in range(0, len(idx), self.batch_size)]
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return sum(-(-len(v) // self.batch_size) * self.batch_size for v in self.by_task.values())
