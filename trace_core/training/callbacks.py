"""Trainer callbacks: per-step metrics to MLflow and periodic validation recall.

Validation: the held-out slice of the training file is encoded with the current weights
exactly as export encodes it (routed queries: direct, or a greedy chain until ``<|emb|>``;
candidates one forward each), searched exactly with NumPy over the slice's distinct
positives, and scored as UniIR hit@k. Every rank runs the forward (ZeRO-3 gathers parameters
collectively); rank 0 logs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from trace_core.model.collate import Processors
from trace_core.model.inference import TraceEncoder
from trace_core.model.trace_model import TraceModel
from trace_core.ranks import is_main_process
from trace_core.types import RoutingMode, TrainSample

log = logging.getLogger(__name__)


def _device(model: TraceModel) -> torch.device:
    return next(model.parameters()).device


def hit_at_k(q: np.ndarray, c: np.ndarray, positive: Sequence[int], k: int) -> float:
    """Mean hit@k of exact inner-product search: is each query's positive in its top k?

    Args:
        q: (n_queries, dim) unit query vectors.
        c: (n_candidates, dim) unit candidate vectors.
        positive: index into ``c`` of each query's positive.
        k: cut-off.
    """
    scores = q @ c.T  # (n_queries, n_candidates)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([p in row for p, row in zip(positive, top, strict=True)]))


@dataclass(frozen=True)
class ValidationResult:
    """Hit@k of the routed encoding on held-out queries, chance level and route rates."""

    recall: float
    chance: float
    direct_rate: float
    forced_rate: float
    route_accuracy: float  # route (direct vs chain) agrees with the sample's label z


def route_accuracy(routes: Sequence[str], z: Sequence[int]) -> float:
    """Share of queries whose route matches their label: direct for z=0, a chain for z=1."""
    if not routes:
        return 0.0
    return sum((r != "direct") == bool(label) for r, label in zip(routes, z, strict=True)) / len(routes)


def validation_recall(
    model: TraceModel,
    proc: Processors,
    samples: Sequence[TrainSample],
    image_root: Path,
    k: int,
    batch_size: int,
    routing: RoutingMode,
    max_new_tokens: int,
) -> ValidationResult:
    """Routed queries (as export encodes them) searched exactly over the samples' distinct positives."""
    cands = list({s.positive.id: s.positive for s in samples}.values())
    index = {c.id: i for i, c in enumerate(cands)}
    was_training = model.training
    model.eval()
    try:
        encoder = TraceEncoder(model, proc, "validation", str(_device(model)))  # export's encoder
        encoded = encoder.encode_queries([s.query for s in samples], image_root, routing, max_new_tokens, batch_size)
        q, routes = encoded.vectors, encoded.routes
        c = encoder.encode_candidates(cands, image_root, batch_size)
    finally:
        model.train(was_training)
    recall = hit_at_k(q, c, [index[s.positive.id] for s in samples], k)
    n = len(routes)
    return ValidationResult(
        recall,
        min(1.0, k / len(cands)),
        routes.count("direct") / n,
        routes.count("forced") / n,
        route_accuracy(routes, [s.z for s in samples]),
    )


@dataclass
class ValidationCallback(TrainerCallback):
    """Validation hit@k before training, every ``eval_steps`` and at the end."""

    proc: Processors
    samples: Sequence[TrainSample]
    image_root: Path
    k: int
    eval_steps: int
    batch_size: int
    routing: RoutingMode
    max_new_tokens: int
    history: list[tuple[int, float]] = field(default_factory=list)
    chance: float = 0.0
    last: ValidationResult | None = None

    def _run(self, model: TraceModel, step: int) -> None:
        if self.history and self.history[-1][0] == step:
            return
        t0 = time.perf_counter()
        res = validation_recall(
            model, self.proc, self.samples, self.image_root, self.k, self.batch_size, self.routing, self.max_new_tokens
        )
        self.history.append((step, res.recall))
        self.chance, self.last = res.chance, res
        if is_main_process():
            from trace_core import tracking

            metrics = {
                f"val_r{self.k}": res.recall,
                "val_chance": res.chance,
                "val_direct_rate": res.direct_rate,
                "val_forced_rate": res.forced_rate,
                "val_route_accuracy": res.route_accuracy,
            }
            tracking.log_metrics(metrics, step=step)
            log.info(
                "step %d: validation R@%d = %.4f (chance %.4f; direct %.2f, forced %.2f, route acc %.2f; %.1fs)",
                step,
                self.k,
                res.recall,
                res.chance,
                res.direct_rate,
                res.forced_rate,
                res.route_accuracy,
                time.perf_counter() - t0,
            )

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the history (step 0 = the untrained baseline) and the last result."""
        last = None if self.last is None else asdict(self.last)
        return {"history": [[s, r] for s, r in self.history], "chance": self.chance, "last": last}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue the history of the run a checkpoint came from."""
        self.history = [(int(s), float(r)) for s, r in saved["history"]]
        self.chance = float(saved["chance"])
        self.last = None if saved["last"] is None else ValidationResult(**saved["last"])

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        """Untrained model's recall (a resumed run keeps the baseline of its checkpoint's history)."""
        if not self.history:
            self._run(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        """Every ``eval_steps`` optimizer steps."""
        if self.eval_steps > 0 and state.global_step % self.eval_steps == 0:
            self._run(model, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        """Trained model's recall."""
        self._run(model, state.global_step)


@dataclass
class MetricsCallback(TrainerCallback):
    """Logs every Trainer log (loss, L_gen, L_ret, lr, ...) plus samples/s to MLflow."""

    global_batch: int
    history: list[dict[str, float]] = field(default_factory=list)
    _last: tuple[float, int] | None = None

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the logged rows so far."""
        return {"history": self.history}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue the rows of the run a checkpoint came from."""
        self.history = [{k: float(v) for k, v in row.items()} for row in saved["history"]]

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """Start the throughput clock."""
        self._last = (time.perf_counter(), state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        """Forward numeric logs with ``samples_per_s`` since the previous log."""
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        row = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if self._last is not None and state.global_step > self._last[1]:
            row["samples_per_s"] = (state.global_step - self._last[1]) * self.global_batch / (now - self._last[0])
        self._last = (now, state.global_step)
        row["step"] = float(state.global_step)
        self.history.append(row)
        if is_main_process():
            from trace_core import tracking

            tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, step=state.global_step)


def eta_text(seconds: float) -> str:
    """A duration as ``1h02m``, ``4m05s`` or ``12s``."""
    s = max(int(round(seconds)), 0)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class ProgressCallback(TrainerCallback):
    """Training progress on rank 0: a bar on a terminal, else a few log lines with the ETA.

    On a terminal, a tqdm bar shows step/total, elapsed time, ETA and the latest loss; piped,
    one log line per ``1/lines`` of the steps says the same (so logs stay short). Replaces the
    Trainer's own printer, which prints every log dict.
    """

    lines: int = 10
    bar: Any = None
    _every: int = 0
    _t0: float = 0.0
    _start: int = 0
    _loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """Open the bar (terminal) or set the log interval (pipe)."""
        if not is_main_process():
            return
        self._t0, self._start = time.perf_counter(), state.global_step
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")
        else:
            self._every = max(state.max_steps // max(self.lines, 1), 1)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """Advance the bar, or log step/total, elapsed time and ETA every interval."""
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        elif self._every and state.global_step % self._every == 0 and state.global_step < state.max_steps:
            done = state.global_step - self._start
            elapsed = time.perf_counter() - self._t0
            eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
            loss = "" if self._loss is None else f", loss {self._loss:.3f}"
            log.info(
                "train: step %d/%d (%.0f%%), %s elapsed, ETA %s%s",
                state.global_step,
                state.max_steps,
                100 * state.global_step / state.max_steps,
                eta_text(elapsed),
                eta_text(eta),
                loss,
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        """Keep the latest training loss (shown on the bar)."""
        if logs and isinstance(logs.get("loss"), (int, float)):
            self._loss = float(logs["loss"])
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self._loss:.3f}", refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
