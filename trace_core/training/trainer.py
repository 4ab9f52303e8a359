"""``transformers.Trainer`` subclass: only the loss (and the task-balanced sampler) change.

The training loop, optimiser, scheduler, DeepSpeed integration, checkpointing and exact
resume are the Trainer's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from trace_core.model.losses import LossOutput
from trace_core.training.sampler import TaskBalancedSampler

COMPONENTS = ("loss_gen", "loss_ret", "loss_route", "accuracy")


class TraceTrainer(Trainer):
    """Trainer whose loss is TRACE's ``lambda_gen * CE + lambda_ret * InfoNCE``.

    Args:
        tasks: task id of each training sample (enables task-balanced batches), or None.
        sampler_seed: seed of the task-balanced order.
        *args: passed to :class:`transformers.Trainer`.
        **kwargs: passed to :class:`transformers.Trainer`.
    """

    def __init__(self, *args: Any, tasks: Sequence[int] | None = None, sampler_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = list(tasks) if tasks is not None else None
        self.sampler_seed = sampler_seed
        self._sums: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        self._count = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, LossOutput]:
        """One batched forward over [queries; candidates]; components kept for logging."""
        out: LossOutput = model(**inputs)
        if model.training:
            for name in COMPONENTS:
                self._sums[name] += float(getattr(out, name))
            self._count += 1
        loss = out.loss
        if loss is None:  # LossOutput is a ModelOutput, whose fields are optional
            raise RuntimeError("TraceModel.forward returned no loss")
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean L_gen, L_ret and in-batch accuracy since the last log."""
        if self._count and "loss" in logs:
            logs.update({k: round(v / self._count, 6) for k, v in self._sums.items()})
            self._sums = dict.fromkeys(COMPONENTS, 0.0)
            self._count = 0
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int] | None:
        if self.tasks is None:
            return super()._get_train_sampler(train_dataset)
        return TaskBalancedSampler(self.tasks, self.sampler_seed)
