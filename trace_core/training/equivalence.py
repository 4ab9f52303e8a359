"""Equivalence checks of the distributed and saved variants of a training step (tests and ``make rehearsal``).

* :func:`gather_equivalence`: two ranks x batch b (InfoNCE over gathered embeddings, a real
  multi-process gloo group) against one rank x batch 2b: the objective and the data-parallel
  averaged gradients must agree.
* :func:`merge_equivalence`: the embeddings of the saved, LoRA-merged model against the
  unmerged LoRA model with the same weights.
* :func:`curve_max_abs_diff`: the largest difference between the losses of two training curves
  (a resumed run against an uninterrupted one).
"""

from __future__ import annotations

import csv
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trace_core.config import Params, dump_params, parse_params
from trace_core.types import EncodeItem, TrainSample

LOSS_COLUMNS = ("loss", "loss_gen", "loss_ret")


@dataclass(frozen=True)
class GatherCheck:
    """One rank x 2b against ``world_size`` ranks x b: objective and gradient differences."""

    world_size: int
    loss_single: float
    loss_ranks: float
    loss_abs_diff: float
    grad_max_abs_diff: float
    grad_max_abs: float


def float32_params(params: Params) -> Params:
    """``params`` with ``train.bf16`` off (the checks compare float32 arithmetic)."""
    raw = dump_params(params)
    raw["train"]["bf16"] = False
    return parse_params(raw, "<equivalence>")


def perturb_adapters(model: torch.nn.Module, seed: int) -> None:
    """Give every LoRA B and trainable-token delta small random values (both start at zero/copies)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype))


def _objective(params: Params, out: Any) -> float:
    """``lambda_gen * L_gen + lambda_ret * L_ret + lambda_route * L_route`` of a single-process step."""
    t = params.train
    return float(t.lambda_gen * out.loss_gen + t.lambda_ret * out.loss_ret + t.lambda_route * out.loss_route)


def _step(params: Params, samples: Sequence[TrainSample], data_root: Path, tok_dir: Path, seed: int) -> Any:
    """Build the model as the train stage does (float32, eval: no dropout), one forward + backward."""
    from trace_core.model.collate import TrainCollator
    from trace_core.training.build import build_model

    torch.manual_seed(seed)
    model, bb = build_model(params, list(samples), tok_dir)
    perturb_adapters(model, seed)
    model.eval()
    batch = TrainCollator(bb.proc, data_root, params.train.hard_negatives)(list(samples))
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _rank_worker(
    rank: int, world: int, port: int, params: Params, shards: list[list[TrainSample]], paths: list[str]
) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data_root, tok_dir, out_file = (Path(p) for p in paths)
        out, grads = _step(params, shards[rank], data_root, tok_dir, seed=0)
        for g in grads.values():  # what the data-parallel reduction does: the ranks' mean
            dist.all_reduce(g)
            g.div_(world)
        gen = torch.tensor([float(out.loss_gen), float(out.loss_route)])
        dist.all_reduce(gen)
        gen.div_(world)  # the ranks' mean of the generation terms = the global means
        if rank == 0:
            result = {"loss_gen": gen[0], "loss_route": gen[1], "loss_ret": out.loss_ret.detach(), "grads": grads}
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gather_equivalence(
    params: Params, samples: Sequence[TrainSample], data_root: Path, world_size: int = 2
) -> GatherCheck:
    """One training step on ``world_size`` gloo ranks (b samples each) vs one process on all of them.

    The model is built by the train stage's own :func:`~trace_core.training.build.build_model`
    in float32 with LoRA B / trainable-token deltas perturbed (so every adapter gets a
    gradient), dropout off. The ranks' gradients are averaged as data parallelism does.

    Args:
        params: the run's params (``train.gather_across_ranks`` should be on).
        samples: ``world_size * b`` training samples; rank r takes the r-th block of b.
        data_root: image root of the samples.
        world_size: number of processes.

    Returns:
        The objective of both runs, their difference and the largest gradient difference.
    """
    from torch.multiprocessing.spawn import spawn

    if len(samples) % world_size:
        raise ValueError(f"{len(samples)} samples do not split evenly over {world_size} ranks")
    params = float32_params(params)
    b = len(samples) // world_size
    shards = [list(samples[r * b : (r + 1) * b]) for r in range(world_size)]
    with tempfile.TemporaryDirectory(prefix="trace-gather-") as tmp:
        tok_dir, out_file = Path(tmp) / "tokenizer", Path(tmp) / "rank0.pt"
        single, single_grads = _step(params, samples, data_root, tok_dir, seed=0)  # also fixes the tiny tokenizer
        paths = [str(data_root), str(tok_dir), str(out_file)]
        args = (world_size, _free_port(), params, shards, paths)
        spawn(_rank_worker, args=args, nprocs=world_size, join=True)  # type: ignore[no-untyped-call]
        ranks = torch.load(out_file, weights_only=True)
    t = params.train
    loss_ranks = float(t.lambda_gen * ranks["loss_gen"] + t.lambda_ret * ranks["loss_ret"])
    loss_ranks += float(t.lambda_route * ranks["loss_route"])
    loss_single = _objective(params, single)
    diffs = [float((ranks["grads"][n] - g).abs().max()) for n, g in single_grads.items()]
    if set(ranks["grads"]) != set(single_grads):
        raise RuntimeError("the ranks and the single process computed gradients of different parameters")
    return GatherCheck(
        world_size,
        loss_single,
        loss_ranks,
        abs(loss_ranks - loss_single),
        max(diffs),
        max(float(g.abs().max()) for g in single_grads.values()),
    )


def unmerged_model(params: Params, state: dict[str, torch.Tensor], model_dir: Path) -> tuple[Any, Any]:
    """The LoRA (peft) :class:`TraceModel` with a trained state dict (base weights included), not merged.

    The structure (config, tokenizer) comes from the saved model in ``model_dir``; every weight
    comes from ``state``. Float32.
    """
    from trace_core.model.backbone import prepare_trainable
    from trace_core.model.checkpoint import load_saved, read_meta
    from trace_core.model.trace_model import TraceModel
    from trace_core.training.build import head_config

    bb = load_saved(model_dir, params.model, read_meta(model_dir)["model_class"], torch.float32)
    model = TraceModel(prepare_trainable(bb.model, params.model, bb.proc.ids.emb), bb.proc.ids, head_config(params))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.float().eval(), bb.proc


def merge_equivalence(
    params: Params, state: dict[str, torch.Tensor], model_dir: Path, items: Sequence[EncodeItem], data_root: Path
) -> float:
    """Largest difference between candidate embeddings of the saved (merged) and the unmerged LoRA model.

    Both run in float32 on the same weights (``state``: the consolidated trained state dict
    of a checkpoint; ``model_dir``: the saved model merged from it), so the difference is the
    merge's own rounding (the saved weights' dtype).
    """
    from trace_core.model.inference import TraceEncoder, load_encoder

    merged = load_encoder(model_dir)
    merged.model.float()
    model, proc = unmerged_model(params, state, model_dir)
    unmerged = TraceEncoder(model, proc, "unmerged")
    a = merged.encode_candidates(list(items), data_root, batch_size=len(items))
    b = unmerged.encode_candidates(list(items), data_root, batch_size=len(items))
    return float(np.abs(a - b).max())


def read_curve(path: Path) -> dict[int, dict[str, float]]:
    """``reports/train/curve.csv`` as {step: {column: value}} (empty cells left out)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return {int(r["step"]): {k: float(v) for k, v in r.items() if k != "step" and v} for r in csv.DictReader(fh)}


def curve_max_abs_diff(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> float:
    """Largest |difference| of the loss columns over the steps both curves log; the steps must match."""
    if sorted(a) != sorted(b):
        raise ValueError(f"the curves log different steps: {sorted(a)} vs {sorted(b)}")
    diffs = [abs(a[s][c] - b[s][c]) for s in a for c in LOSS_COLUMNS if c in a[s] and c in b[s]]
    if not diffs:
        raise ValueError("the curves have no loss values in common")
    return max(diffs)
