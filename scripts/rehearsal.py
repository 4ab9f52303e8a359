"""Dress rehearsal of the full preset's code path at toy size: ``make rehearsal`` -> reports/rehearsal.json.

``presets/rehearsal.yaml`` is the full preset (Qwen2.5-VL + LoRA, frozen vision tower with a
trainable merger, trainable ``<|emb|>`` rows, gradient checkpointing, bf16, gradient caching,
DeepSpeed ZeRO-3, gathered InfoNCE) with only sizes and paths changed; its model is a toy
checkpoint in the exact hub layout written here offline. Steps, each one the pipeline's own
command or code:

1. A small M-BEIR-mini laid out by ``trace download`` (the full profile's ``from_dir`` path) and
   the toy checkpoint.
2. ``trace train`` on ``--nproc`` ranks, launched as the README tells GPU users
   (``python -m torch.distributed.run --standalone --nproc_per_node N -m trace_core.cli train``;
   gloo on the CPU): an uninterrupted reference run, then a run killed with SIGKILL (the whole
   launcher and every rank) at its second checkpoint save, then the same command again, which resumes from
   the newest complete checkpoint, finishes, merges LoRA and saves. The resumed losses, curve
   and untrained baseline are compared with the reference run's.
3. The merged model is reloaded and its embeddings compared with the unmerged LoRA model of the
   final checkpoint; one training step on two gloo ranks x b is compared with one process x 2b.
4. ``trace export`` (``--nproc`` ranks when ``scripts/export_equivalence.py`` is present, which then
   also compares one rank with N), ``trace index``, ``trace evaluate``.

Exit status 0 when every check passes. On CUDA (``--device cuda``, ``make gpu-smoke``) the
ranks take one GPU each (``--nproc`` defaults to the GPU count, at most 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from trace_core.config import Params, dump_params, load_params
from trace_core.io import read_json, write_json
from trace_core.paths import Paths

log = logging.getLogger("rehearsal")
ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: tolerances of the checks (bf16 training; the equivalence checks compute in float32)
TOL = {"resume": 1e-3, "merge": 2e-2, "gather_loss": 1e-4, "gather_grad": 1e-4}


def child_env(device: str) -> dict[str, str]:
    """Environment of the launched commands: no inherited launch variables; the CPU accelerator off CUDA."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # per rank (the launcher's default); the ranks share the cores
        env["DS_ACCELERATOR"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env.pop("DS_ACCELERATOR", None)
    return env


def stage_command(stage: str, params_file: Path, nproc: int) -> list[str]:
    """``trace <stage>``: one process, or the distributed launcher with ``nproc`` ranks (README)."""
    cmd = ["-m", "trace_core.cli", stage, "-p", str(params_file)]
    if nproc == 1:
        return [sys.executable, *cmd]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *cmd]


def run_logged(cmd: list[str], log_file: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` with its output in ``log_file``; wall seconds. Raises with the log's tail on failure."""
    log.info("$ %s  (log %s)", " ".join(cmd[1:]), log_file)
    t0 = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {rc}; log {log_file}:\n{tail}")
    return time.perf_counter() - t0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux ``/proc``), parents first."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:  # the thread or process has just ended
                continue
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it at once, as a crashed node would end them.

    ``torch.distributed.run`` starts each rank in a session of its own, so killing the
    launcher's process group would leave the ranks running.
    """
    for p in process_tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            continue


def kill_at_save(cmd: list[str], ckpt_root: Path, first: int, second: int, log_file: Path, env: dict[str, str]) -> bool:
    """Start ``cmd``; once ``checkpoint-<first>`` is complete, SIGKILL it and its ranks at the next save.

    Returns whether the kill hit the save of ``checkpoint-<second>`` in progress (its staging
    folder present, the final one not yet); otherwise it hit shortly after.

    Raises:
        RuntimeError: the run ended (or failed) before it could be killed.
    """
    log.info("$ %s  (killed at the save of checkpoint-%d; log %s)", " ".join(cmd[1:]), second, log_file)
    staged, final = ckpt_root / ".staging" / f"checkpoint-{second}", ckpt_root / f"checkpoint-{second}"
    with log_file.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            while not (ckpt_root / f"checkpoint-{first}").is_dir():
                if proc.poll() is not None:
                    raise RuntimeError(f"training exited {proc.returncode} before checkpoint-{first}; log {log_file}")
                time.sleep(0.05)
            while not (staged.exists() or final.exists()):
                if proc.poll() is not None:
                    raise RuntimeError(f"training exited {proc.returncode} before checkpoint-{second}; log {log_file}")
                time.sleep(0.005)
            during = staged.exists() and not final.exists()
        finally:
            kill_tree(proc.pid)
            proc.wait()
    log.info("killed (SIGKILL) %s the save of checkpoint-%d", "during" if during else "just after", second)
    return during


def write_variant(params_file: Path, out: Path, overrides: dict[str, Any]) -> Path:
    """A copy of a params file with dotted keys changed (the reference run's own folders)."""
    raw = dump_params(load_params(params_file))
    for key, value in overrides.items():
        section, *rest = key.split(".")
        node = raw[section]
        for part in rest[:-1]:
            node = node[part]
        node[rest[-1]] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def rehearsal_root(params: Params, params_file: Path) -> Path:
    """The one folder every path of the rehearsal lives in (it is wiped); refuses params that spread out."""
    folders = [Path(v) for v in dump_params(params)["paths"].values()]
    folders += [Path(p) for p in (params.model.name_or_path, params.download.from_dir) if p]
    root = Path(os.path.commonpath([str(f.resolve()) for f in folders]))
    if root in (ROOT, Path.cwd().resolve(), Path(root.anchor)):
        raise ValueError(f"{params_file}: every path of a rehearsal must sit in one folder of its own (it is wiped)")
    return root


def prepare(params: Params, root: Path, env: dict[str, str], params_file: Path, logs: Path) -> None:
    """A fresh rehearsal folder, the data and the toy hub-layout checkpoint.

    The data: M-BEIR-mini (``download.mini`` sizes) written to ``download.from_dir``, then laid
    out by ``trace download`` as the full profile lays out a local M-BEIR copy.
    """
    from trace_core.data.mini import write_mini
    from trace_core.model.fixture_checkpoint import write_fixture_checkpoint

    shutil.rmtree(root, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    if params.download.from_dir is None:
        raise ValueError(f"{params_file}: download.from_dir must name the folder the small data set is written to")
    write_mini(params.download.mini, params.base.seed, Path(params.download.from_dir))
    run_logged(stage_command("download", params_file, 1), logs / "download.log", env)
    if params.model.name_or_path is None:
        raise ValueError(f"{params_file}: model.name_or_path must name the toy checkpoint folder")
    write_fixture_checkpoint(Path(params.model.name_or_path), params.model.family, params.model.tiny, params.base.seed)


def training(
    params: Params, paths: Paths, params_file: Path, nproc: int, env: dict[str, str], work: Path
) -> dict[str, Any]:
    """Reference run, killed run, resumed run; the resume comparisons."""
    from trace_core.training.equivalence import curve_max_abs_diff, read_curve
    from trace_core.training.train import checkpoint_dir

    ref_dir = work / "reference"
    ref_file = write_variant(
        params_file,
        ref_dir / "params.yaml",
        {
            "paths.state_dir": str(ref_dir / "state"),
            "paths.model_dir": str(ref_dir / "model"),
            "paths.metrics_dir": str(ref_dir / "metrics"),
            "paths.reports_dir": str(ref_dir / "reports"),
            "tracking.enabled": False,
        },
    )
    logs = work / "logs"
    t = {"reference": run_logged(stage_command("train", ref_file, nproc), logs / "train_reference.log", env)}
    save = params.train.save_steps
    t0 = time.perf_counter()
    train_cmd = stage_command("train", params_file, nproc)
    during = kill_at_save(train_cmd, checkpoint_dir(paths), save, 2 * save, logs / "train_killed.log", env)
    t["killed"] = time.perf_counter() - t0
    t["resumed"] = run_logged(train_cmd, logs / "train_resumed.log", env)
    ref_paths = Paths.from_params(load_params(ref_file))
    ref = read_curve(ref_paths.reports_dir / "train" / "curve.csv")
    res = read_curve(paths.reports_dir / "train" / "curve.csv")
    ref_m, res_m = read_json(ref_paths.metrics_file("train")), read_json(paths.metrics_file("train"))
    res_t = read_json(paths.timings_file("train"))  # run-specific numbers live apart from the DVC metrics
    resumed_log = (logs / "train_resumed.log").read_text(encoding="utf-8", errors="replace")
    resumed_from = [line.rsplit("checkpoint-", 1)[-1] for line in resumed_log.splitlines() if "resuming from" in line]
    k = params.train.val_k
    return {
        "resume_loss_max_abs_diff": curve_max_abs_diff(ref, res),
        "curve_steps": sorted(res),
        "untrained_baseline_kept": ref_m[f"val_r{k}_untrained"] == res_m[f"val_r{k}_untrained"],
        "killed_during_save": during,
        "kill_at_checkpoint": 2 * save,
        "resumed_from_step": int(resumed_from[0]) if resumed_from else None,
        "world_size": res_m["world_size"],
        "steps": res_m["steps"],
        "samples_per_s": res_t["samples_per_s"],
        "peak_gpu_mem_gib": res_t.get("peak_gpu_mem_gib"),
        "train_seconds": {key: round(v, 1) for key, v in t.items()},
    }


def model_checks(params: Params, paths: Paths) -> dict[str, Any]:
    """Reload of the merged model vs the unmerged LoRA model; two gloo ranks vs one process."""
    from safetensors.torch import load_file

    from trace_core.model.checkpoint import read_meta
    from trace_core.training.equivalence import gather_equivalence, merge_equivalence
    from trace_core.training.train import checkpoint_dir, load_samples

    last = checkpoint_dir(paths) / f"checkpoint-{params.train.max_steps}"
    state = load_file(str(last / "model.safetensors"))
    samples, _ = load_samples(params, paths)
    items = [s.positive for s in samples[:6]] + [s.query for s in samples[:6]]
    merge = merge_equivalence(params, state, paths.model_dir, items, paths.data_root)
    b = params.train.per_device_batch_size
    gather = gather_equivalence(params, samples[: 2 * b], paths.data_root, world_size=2)
    meta = read_meta(paths.model_dir)
    return {
        "model_class": meta["model_class"],
        "merge_embedding_max_abs_diff": merge,
        "lora_state_keys": sum("lora_" in key for key in state),
        "gather_loss_abs_diff": gather.loss_abs_diff,
        "gather_grad_max_abs_diff": gather.grad_max_abs_diff,
        "gather_grad_max_abs": gather.grad_max_abs,
    }


def serving(params_file: Path, nproc: int, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Export (ranks when the rank-sharded export and its comparison script exist), index, evaluate."""
    logs = work / "logs"
    script = ROOT / "scripts" / "export_equivalence.py"
    sharded = script.exists() and nproc > 1
    out: dict[str, Any] = {"export_world_size": nproc if sharded else 1, "export_equal_single_rank": None}
    run_logged(stage_command("export", params_file, nproc if sharded else 1), logs / "export.log", env)
    run_logged(stage_command("index", params_file, 1), logs / "index.log", env)
    run_logged(stage_command("evaluate", params_file, 1), logs / "evaluate.log", env)
    if sharded:
        eq_file = work / "export_equivalence.json"
        cmd = [sys.executable, str(script), "--params", str(params_file), "--nproc", str(nproc), "--out", str(eq_file)]
        try:
            run_logged(cmd, logs / "export_equivalence.log", env)
        except RuntimeError as err:  # exit 1: not equal (the JSON says so); 2: an export failed
            log.error("%s", err)
        if eq_file.exists():
            eq = read_json(eq_file)
            out.update({k: eq.get(k) for k in ("export_world_size", "export_equal_single_rank")})
            out["export_max_abs_diff"] = eq.get("max_abs_diff")
    return out


def failures(report: dict[str, Any], nproc: int) -> list[str]:
    """The checks that did not pass."""
    bad = []
    if report["resume_loss_max_abs_diff"] > TOL["resume"]:
        bad.append("resume losses differ from the uninterrupted run's")
    if report["curve_steps"] != list(range(report["steps"] + 1)) or not report["untrained_baseline_kept"]:
        bad.append("the curve or the untrained baseline did not survive the resume")
    if report["merge_embedding_max_abs_diff"] > TOL["merge"]:
        bad.append("merged embeddings differ from the unmerged LoRA model's")
    if report["gather_loss_abs_diff"] > TOL["gather_loss"]:
        bad.append("two ranks x b and one rank x 2b give different losses")
    if report["gather_grad_max_abs_diff"] > TOL["gather_grad"] * max(1.0, report["gather_grad_max_abs"]):
        bad.append("two ranks x b and one rank x 2b give different gradients")
    if report["world_size"] != nproc:
        bad.append(f"trained on {report['world_size']} ranks, not {nproc}")
    if report["export_equal_single_rank"] is False:
        bad.append("the rank-sharded export differs from the one-rank export")
    return bad


def main() -> int:
    """Run the rehearsal and write the report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--params", type=Path, default=Path("presets/rehearsal.yaml"), help="rehearsal params")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the ranks train")
    ap.add_argument("--nproc", type=int, default=None, help="ranks (default: 2 on CPU, min(2, GPUs) on CUDA)")
    ap.add_argument("--out", type=Path, default=Path("reports/rehearsal.json"), help="report JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    nproc = args.nproc or (min(2, torch.cuda.device_count()) if args.device == "cuda" else 2)
    params = load_params(args.params)
    paths = Paths.from_params(params)
    root = rehearsal_root(params, args.params)
    work = root / "run"
    env = child_env(args.device)
    prepare(params, root, env, args.params, work / "logs")
    report: dict[str, Any] = {"device": args.device, "params": str(args.params)}
    report |= training(params, paths, args.params, nproc, env, work)
    report |= model_checks(params, paths)
    report |= serving(args.params, nproc, env, work)
    tp = params.train
    report |= {
        "lora": params.model.lora and report.pop("lora_state_keys") > 0,
        "zero_stage": tp.zero_stage if tp.deepspeed else 0,
        "bf16": tp.bf16,
        "gradient_checkpointing": tp.gradient_checkpointing,
        "grad_cache_chunk": tp.grad_cache_chunk,
        "tolerances": TOL,
    }
    report["failures"] = failures(report, nproc)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, report)
    log.info("%s", json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
