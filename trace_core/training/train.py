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


def checkpoint_dir(paths: Paths) -> Path:
    """Where Trainer checkpoints of the train stage are kept."""
    return paths.state_dir / STAGE / "checkpoints"


def run_key(params: Params, data_hash: str) -> str:
    """Hash of what a checkpoint depends on (model, train, seed, data)."""
    d = dump_params(params)
    blob = json.dumps(
        {"model": d["model"], "train": d["train"], "seed": d["base"]["seed"], "data": data_hash}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_checkpoints(root: Path, key: str) -> str | None:
    """Return the latest checkpoint to resume from, or clear checkpoints of another run."""
    key_file = root / "run_key.txt"
    if root.exists() and (not key_file.exists() or key_file.read_text().strip() != key):
        log.warning("checkpoints in %s belong to other params/data: starting afresh", root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    ckpts = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


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


def train_summary(trainer: Any, val_cb: Any, metrics_cb: Any, wall: float, n_train: int, n_val: int) -> dict[str, Any]:
    """The ``metrics/train.json`` content."""
    hist = metrics_cb.history
    last = hist[-1] if hist else {}
    rates = [h["samples_per_s"] for h in hist if "samples_per_s" in h]
    return {
        "steps": int(trainer.state.global_step),
        "n_train": n_train,
        "n_val": n_val,
        "wall_time_s": round(wall, 1),
        "samples_per_s": round(sum(rates) / len(rates), 3) if rates else None,
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


def curve_csv(history: list[dict[str, float]], val_history: list[tuple[int, float]], k: int) -> str:
    """Training curve as CSV (step, losses, lr, samples/s, validation recall) for DVC plots."""
    cols = ["loss", "loss_gen", "loss_ret", "loss_route", "learning_rate", "samples_per_s", f"val_r{k}"]
    rows: dict[int, dict[str, float]] = {int(h["step"]): dict(h) for h in history}
    for step, recall in val_history:
        rows.setdefault(step, {})[f"val_r{k}"] = recall
    lines = [",".join(["step", *cols])]
    lines += [
        ",".join([str(st)] + [f"{rows[st][c]:.6g}" if c in rows[st] else "" for c in cols]) for st in sorted(rows)
    ]
    return "\n".join(lines) + "\n"


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Train, save the model and metrics, log and register in MLflow."""
    import torch

    from trace_core import tracking
    from trace_core.training.build import build_trainer, deepspeed_scope, save_trained

    if params.model.emb_token != EMB_TOKEN:
        raise ValueError(f"model.emb_token must be {EMB_TOKEN} (the training file's target token)")
    with deepspeed_scope():  # distributed/DeepSpeed globals end with the stage
        cuda = torch.cuda.is_available()
        configure_environment(params, paths, cuda)
        samples, data_hash = load_samples(params, paths)
        ckpt_root = checkpoint_dir(paths)
        resume = prepare_checkpoints(ckpt_root, run_key(params, data_hash))
        parts = build_trainer(params, paths, samples, ckpt_root, cuda)
        t0 = time.perf_counter()
        parts.trainer.train(resume_from_checkpoint=resume)
        wall = time.perf_counter() - t0
        summary = train_summary(parts.trainer, parts.val_cb, parts.metrics_cb, wall, parts.n_train, parts.n_val)
        summary.update(parts.counts)
        save_trained(parts, params, paths.model_dir)
        if is_main_process():
            curve = paths.reports_dir / STAGE / "curve.csv"
            write_text(curve, curve_csv(parts.metrics_cb.history, parts.val_cb.history, parts.val_cb.k))
            write_json(paths.metrics_file(STAGE), summary)
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracking.log_artifact(paths.metrics_file(STAGE))
        summary["registered_version"] = tracking.register_model(params, paths.model_dir)
    log.info("train: %s", {k: v for k, v in summary.items() if k != "val_history"})
    return summary
