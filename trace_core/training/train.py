"""Stage ``train``: joint CE + InfoNCE training; writes models/trace/ and metrics/train.json.

``run`` only wires I/O: it reads the M-BEIR-CoT file (or derives a z=0 file from the train
split while the CoT stages have not produced one), trains with :class:`TraceTrainer`
(DeepSpeed ZeRO-3 when ``train.deepspeed``; the CPU accelerator in the mini profile),
saves the model with its tokenizer, image processor and ``trace_meta.json``, and logs and
registers it in MLflow. Checkpoints live under ``paths.state_dir/train/checkpoints`` (not a
DVC output, so ``dvc repro`` does not delete them) and a run resumes exactly from the
latest one when params and data are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from trace_core.config import Params, dump_params
from trace_core.data.dataset import EMB_TOKEN, load_train_samples
from trace_core.io import sha256_file, write_json, write_text
from trace_core.paths import Paths
from trace_core.plots import training_curve
from trace_core.ranks import is_main_process

log = logging.getLogger(__name__)
STAGE = "train"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure_environment(params: Params, paths: Paths, cuda: bool) -> None:
    """Single-process distributed env (unless launched by deepspeed) and the CPU accelerator."""
    if params.train.deepspeed and not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(paths.state_dir / "torch_extensions"))
    # DeepSpeed 0.19 calls the old collective names on every ZeRO-3 step; torch warns each time.
    warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
    if params.train.deepspeed and "RANK" not in os.environ:
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )


def checkpoint_dir(paths: Paths, stage: str = STAGE) -> Path:
    """Where Trainer checkpoints of a training stage (``train``, ``self_train``) are kept."""
    return paths.state_dir / stage / "checkpoints"


def run_key(params: Params, data_hash: str) -> str:
    """Hash of what a checkpoint depends on (model, train, seed, data)."""
    d = dump_params(params)
    blob = json.dumps(
        {"model": d["model"], "train": d["train"], "seed": d["base"]["seed"], "data": data_hash}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def prepare_checkpoints(root: Path, key: str) -> str | None:
    """The newest complete checkpoint to resume from (None: start afresh).

    Checkpoints of other params/data are cleared; the staging folder of an interrupted save
    and any ``checkpoint-N`` without ``trainer_state.json`` (incomplete) are removed with a
    warning. Every rank makes the same choice; only rank 0 deletes and writes.
    """
    from trace_core.training.trainer import COMPLETE_MARKER, STAGING

    key_file = root / "run_key.txt"
    write = _is_rank0()
    if root.exists() and (not key_file.exists() or key_file.read_text().strip() != key):
        log.warning("checkpoints in %s belong to other params/data: starting afresh", root)
        if write:
            shutil.rmtree(root)
        _write_key(root, key_file, key, write)
        return None
    _write_key(root, key_file, key, write)
    if (root / STAGING).exists() and any((root / STAGING).iterdir()):
        log.warning("%s: removing an interrupted checkpoint save", root / STAGING)
        if write:
            shutil.rmtree(root / STAGING, ignore_errors=True)
    elif write:
        shutil.rmtree(root / STAGING, ignore_errors=True)
    complete = []
    for ckpt in root.glob("checkpoint-*"):
        if not ckpt.name.split("-", 1)[1].isdigit():
            continue
        if (ckpt / COMPLETE_MARKER).is_file():
            complete.append(ckpt)
            continue
        log.warning("%s is incomplete (no %s): removed, not resumed", ckpt, COMPLETE_MARKER)
        if write:
            shutil.rmtree(ckpt, ignore_errors=True)
    complete.sort(key=lambda p: int(p.name.split("-")[-1]))
    return str(complete[-1]) if complete else None


def _write_key(root: Path, key_file: Path, key: str, write: bool) -> None:
    if write:
        root.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)


def load_samples(params: Params, paths: Paths) -> tuple[list[Any], str]:
    """The training samples and a hash of their source file."""
    if paths.cot_train.exists():
        return load_train_samples(paths.cot_train), sha256_file(paths.cot_train)
    from trace_core.data.mbeir import train_query_files
    from trace_core.training.data import derive_z0_samples

    log.warning("%s missing: training on a z=0 (<|emb|>-only) file derived from the train split", paths.cot_train)
    d, seed = params.data, params.base.seed
    samples = derive_z0_samples(paths.data_root, seed, params.train.hard_negatives, d.train_file, d.normalize_text)
    src = "".join(sha256_file(f) for f in train_query_files(paths.data_root, d.train_file))
    return samples, hashlib.sha256(src.encode()).hexdigest()


def train_timings(metrics_cb: Any, wall: float, peak_gpu_mem_gib: float | None) -> dict[str, Any]:
    """Run-specific measurements of training (``metrics/timings/train.json``, never a DVC output)."""
    rates = [h["samples_per_s"] for h in metrics_cb.history if "samples_per_s" in h]
    return {
        "wall_time_s": round(wall, 1),
        "samples_per_s": round(sum(rates) / len(rates), 3) if rates else None,
        "samples_per_s_by_step": [
            [int(h["step"]), h["samples_per_s"]] for h in metrics_cb.history if "samples_per_s" in h
        ],
        "peak_gpu_mem_gib": peak_gpu_mem_gib,
    }


def train_summary(trainer: Any, val_cb: Any, metrics_cb: Any, n_train: int, n_val: int) -> dict[str, Any]:
    """The ``metrics/train.json`` content: reproducible numbers only (timings go apart)."""
    hist = metrics_cb.history
    last = hist[-1] if hist else {}
    return {
        "steps": int(trainer.state.global_step),
        "n_train": n_train,
        "world_size": int(trainer.args.world_size),
        "n_val": n_val,
        "final_loss": last.get("loss"),
        "final_loss_gen": last.get("loss_gen"),
        "final_loss_ret": last.get("loss_ret"),
        "final_loss_route": last.get("loss_route"),
        f"val_r{val_cb.k}_untrained": val_cb.history[0][1] if val_cb.history else None,
        f"val_r{val_cb.k}_trained": val_cb.history[-1][1] if val_cb.history else None,
        f"val_r{val_cb.k}_chance": round(val_cb.chance, 6),
        "val_direct_rate": val_cb.last.direct_rate if val_cb.last else None,
        "val_route_accuracy": val_cb.last.route_accuracy if val_cb.last else None,
        "val_forced_rate": val_cb.last.forced_rate if val_cb.last else None,
        "val_history": [[s, r] for s, r in val_cb.history],
    }


def summary_text(summary: dict[str, Any], k: int) -> str:
    """One line: steps, time, final losses, validation R@k before/after against chance, registered version.

    ``summary`` is ``metrics/train.json``'s content, with the wall time from the timings.
    """

    def pct(key: str) -> str:
        value = summary.get(key)
        return "?" if value is None else f"{100 * value:.1f}%"

    def num(key: str) -> str:
        value = summary.get(key)
        return "?" if value is None else f"{value:.3f}"

    return (
        f"{summary['steps']} steps in {summary.get('wall_time_s') or 0:.0f} s; final loss {num('final_loss')} "
        f"(gen {num('final_loss_gen')}, ret {num('final_loss_ret')}); validation R@{k} "
        f"{pct(f'val_r{k}_untrained')} -> {pct(f'val_r{k}_trained')} (chance {pct(f'val_r{k}_chance')}); "
        f"registered version {summary.get('registered_version') or '-'}"
    )


def curve_csv(history: list[dict[str, float]], val_history: list[tuple[int, float]], k: int) -> str:
    """Training curve as CSV (step, losses, lr, validation recall) for DVC plots; throughput is in the timings."""
    cols = ["loss", "loss_gen", "loss_ret", "loss_route", "learning_rate", f"val_r{k}"]
    rows: dict[int, dict[str, float]] = {int(h["step"]): dict(h) for h in history}
    for step, recall in val_history:
        rows.setdefault(step, {})[f"val_r{k}"] = recall
    lines = [",".join(["step", *cols])]
    lines += [
        ",".join([str(st)] + [f"{rows[st][c]:.6g}" if c in rows[st] else "" for c in cols]) for st in sorted(rows)
    ]
    return "\n".join(lines) + "\n"


def fit(
    params: Params,
    paths: Paths,
    samples: list[Any],
    key: str,
    ckpt_root: Path,
    out_dir: Path,
    cuda: bool,
    init_dir: Path | None = None,
    save_params: Params | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train (resuming from a checkpoint of the same ``key``) and save the model to ``out_dir``.

    Shared by ``train`` (phase 1, a fresh backbone) and ``self_train`` (phase 2 from
    ``init_dir``). ``save_params`` (default ``params``) go into the saved ``trace_meta.json``.
    Call inside :func:`~trace_core.training.build.deepspeed_scope` after
    :func:`configure_environment`.

    Returns:
        The trainer parts, the summary (``train_summary`` + parameter counts) and the timings.
    """
    import torch

    from trace_core.training.build import build_trainer, save_trained

    resume = prepare_checkpoints(ckpt_root, key)
    if resume:
        log.info("resuming from %s", resume)
    parts = build_trainer(params, paths, samples, ckpt_root, cuda, init_dir)
    t0 = time.perf_counter()
    parts.trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t0
    summary = train_summary(parts.trainer, parts.val_cb, parts.metrics_cb, parts.n_train, parts.n_val)
    summary.update(parts.counts)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None
    timings = train_timings(parts.metrics_cb, wall, peak)
    save_trained(parts, save_params or params, out_dir)
    return parts, summary, timings


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Train, save the model and metrics, log and register in MLflow."""
    import torch

    from trace_core import tracking
    from trace_core.training.build import deepspeed_scope

    if params.model.emb_token != EMB_TOKEN:
        raise ValueError(f"model.emb_token must be {EMB_TOKEN} (the training file's target token)")
    with deepspeed_scope():  # distributed/DeepSpeed globals end with the stage
        cuda = torch.cuda.is_available()
        configure_environment(params, paths, cuda)
        samples, data_hash = load_samples(params, paths)
        ckpt_root = checkpoint_dir(paths)
        parts, summary, timings = fit(
            params, paths, samples, run_key(params, data_hash), ckpt_root, paths.model_dir, cuda
        )
        if is_main_process():
            curve = paths.reports_dir / STAGE / "curve.csv"
            text = curve_csv(parts.metrics_cb.history, parts.val_cb.history, parts.val_cb.k)
            write_text(curve, text)
            png = training_curve(text, curve.with_suffix(".png"), k=parts.val_cb.k, chance=parts.val_cb.chance)
            write_json(paths.metrics_file(STAGE), summary)
            write_json(paths.timings_file(STAGE), timings)
            tracking.log_artifact(curve, "train")
            tracking.log_artifact(png, "train")
        scalars = {**summary, **timings}
        tracking.log_metrics({k: v for k, v in scalars.items() if isinstance(v, (int, float))})
        tracking.log_artifact(paths.metrics_file(STAGE))
        summary["registered_version"] = tracking.register_model(params, paths.model_dir)
    log.info("train: %s", summary_text({**summary, **timings}, parts.val_cb.k))
    return summary
