"""``transformers.Trainer`` subclass: the loss, the task-balanced sampler and crash-safe checkpoints.

The training loop, optimiser, scheduler, DeepSpeed integration and exact resume are the
Trainer's own. Checkpoints are made crash-safe here: each is written (by every rank) into
``<output_dir>/.staging/checkpoint-N`` and renamed to ``<output_dir>/checkpoint-N`` by the
saving process once every rank has finished, so a ``checkpoint-N`` folder is always complete
(a kill -9 mid-save leaves only the staging folder, which the next run removes). Callbacks
with a ``checkpoint_state``/``restore`` pair (the validation and metrics histories) are
saved into the checkpoint as ``trace_callbacks.json`` and restored on resume, so the curve
and the untrained baseline survive a resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, rotate_checkpoints

from trace_core.model.losses import LossOutput
from trace_core.training.sampler import TaskBalancedSampler

log = logging.getLogger(__name__)
COMPONENTS = ("loss_gen", "loss_ret", "loss_route", "accuracy")
STAGING = ".staging"
CALLBACKS_FILE = "trace_callbacks.json"
#: written last into a checkpoint by the Trainer: its presence marks a complete checkpoint
COMPLETE_MARKER = "trainer_state.json"


def deepspeed_safe_globals() -> list[Any]:
    """The DeepSpeed classes its ZeRO checkpoints pickle besides tensors and containers.

    The ZeRO stage (an enum) and the loss scaler's settings (a plain object of numbers).
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return [ZeroStageEnum, LossScaler, DynamicLossScaler]


@contextmanager
def weights_only_deepspeed_load() -> Iterator[None]:
    """DeepSpeed reads its checkpoint files with ``torch.load(weights_only=True)`` inside this block.

    DeepSpeed 0.19's ``TorchCheckpointEngine.load`` passes ``weights_only=False`` (full
    unpickling, which runs arbitrary code from the file). Its ZeRO checkpoints hold tensors,
    containers, strings, numbers and the classes of :func:`deepspeed_safe_globals`, so they
    load under the safe unpickler with those allowed; the engine method is swapped for the
    block's duration. (The Trainer's own files, RNG states included, already load weights-only.)
    """
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    original = TorchCheckpointEngine.load
    allowed = deepspeed_safe_globals()

    def load(self: Any, path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    TorchCheckpointEngine.load = load
    try:
        yield
    finally:
        TorchCheckpointEngine.load = original


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
        self._staging = False

    def _persistent(self) -> dict[str, Any]:
        """Callbacks whose state goes into checkpoints, by class name."""
        return {type(cb).__name__: cb for cb in self.callback_handler.callbacks if hasattr(cb, "checkpoint_state")}

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """Restore the callbacks' histories from the checkpoint, then the Trainer's ``train``."""
        if isinstance(resume_from_checkpoint, str):
            self.restore_callbacks(Path(resume_from_checkpoint))
        with weights_only_deepspeed_load():
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def restore_callbacks(self, checkpoint: Path) -> None:
        """Load ``trace_callbacks.json`` of ``checkpoint`` into the callbacks (a warning if absent)."""
        path = checkpoint / CALLBACKS_FILE
        if not path.is_file():
            log.warning("%s: no %s; validation history and curve restart at the resumed step", checkpoint, path.name)
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        for name, cb in self._persistent().items():
            if name in state:
                cb.restore(state[name])

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's epoch, skipped when a resumed run has no step left.

        Resumed from its final checkpoint (killed after it, before the model was saved), the
        Trainer would take one step past ``max_steps`` when that falls inside an epoch.
        """
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)  # type: ignore[no-untyped-call]

    def _get_output_dir(self, trial: Any) -> str:
        out = super()._get_output_dir(trial)
        return os.path.join(out, STAGING) if self._staging else out

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write the checkpoint into the staging folder, then rename it into place (see module doc)."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        staged, final = run_dir / STAGING / name, run_dir / name
        if self.args.should_save:
            state = {k: cb.checkpoint_state() for k, cb in self._persistent().items()}
            (staged / CALLBACKS_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
        self.accelerator.wait_for_everyone()  # every rank's shards and RNG state are in the staging folder
        if self.args.should_save:
            if final.exists():  # the same step saved again (e.g. the final step after a periodic save)
                shutil.rmtree(final)
            staged.rename(final)
            if not any((run_dir / STAGING).iterdir()):
                (run_dir / STAGING).rmdir()
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint)
            log.info("checkpoint %s complete", final)
        self.accelerator.wait_for_everyone()

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
        if self._count and "loss" in logs:  # every rank logs together (the Trainer gathers the loss)
            means = torch.tensor([self._sums[k] / self._count for k in COMPONENTS], device=self.args.device)
            if self.args.world_size > 1:  # ranks' mean: the global L_gen (see TraceModel._label_means)
                means = self.accelerator.reduce(means, reduction="mean")
            logs.update({k: round(float(v), 6) for k, v in zip(COMPONENTS, means.tolist(), strict=True)})
            self._sums = dict.fromkeys(COMPONENTS, 0.0)
            self._count = 0
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int] | None:
        if self.tasks is None:
            return super()._get_train_sampler(train_dataset)
        return TaskBalancedSampler(self.tasks, self.sampler_seed)
