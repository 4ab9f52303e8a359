"""Training throughput of the tiny preset: DeepSpeed ZeRO-3 (CPU accelerator) vs the plain Trainer.

Each mode runs in its own subprocess (separate peak RSS, separate torch.distributed state)
on the same data (M-BEIR-mini from ``trace download``), the same params and the same number
of steps; samples/s is measured after ``--warmup`` steps. Prints one JSON object (and
writes it with ``--out``). Not a timed test: numbers depend on the machine and its load.

    python bench/train_throughput.py --params params.yaml --steps 12 --out bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _one_mode(params_path: str, mode: str, steps: int, warmup: int) -> dict[str, Any]:
    """Train ``steps`` steps in this process; return timings and peak RSS."""
    import torch
    from transformers import TrainerCallback

    from trace_core.config import dump_params, load_params, parse_params
    from trace_core.env import quiet_environment
    from trace_core.paths import Paths
    from trace_core.training.build import build_trainer
    from trace_core.training.train import configure_environment, load_samples

    quiet_environment()
    raw = dump_params(load_params(params_path))
    state = tempfile.mkdtemp(prefix="trace-bench-")
    raw["train"].update(deepspeed=mode == "zero3", max_steps=steps, eval_steps=0, save_steps=10**9, logging_steps=10**9)
    raw["tracking"]["enabled"] = False
    params = parse_params(raw)
    paths = Paths.from_params(params)
    configure_environment(params, paths, False)  # JIT ops cached under paths.state_dir
    samples, _ = load_samples(params, paths)
    t_init = time.perf_counter()
    parts = build_trainer(params, paths, samples, Path(state) / "ckpt", cuda=False)
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            marks.append(time.perf_counter())

    parts.trainer.add_callback(Clock())
    t0 = time.perf_counter()
    parts.trainer.train()
    timed = marks[warmup:]
    bs = params.train.per_device_batch_size
    rate = (len(timed) - 1) * bs / (timed[-1] - timed[0]) if len(timed) > 1 else None
    return {
        "mode": mode,
        "steps": len(marks),
        "batch_size": bs,
        "samples_per_s": round(rate, 3) if rate else None,
        "init_s": round(t0 - t_init, 1),
        "train_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "params": parts.counts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--mode", choices=["plain", "zero3"], default=None, help="internal: run one mode")
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(_one_mode(a.params, a.mode, a.steps, a.warmup)))
        return
    results = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}, "runs": []}
    for mode in ("plain", "zero3"):
        cmd = [
            sys.executable,
            __file__,
            "--params",
            a.params,
            "--steps",
            str(a.steps),
            "--warmup",
            str(a.warmup),
            "--mode",
            mode,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results["runs"].append(json.loads(out))
    plain, zero = results["runs"]
    if plain["samples_per_s"] and zero["samples_per_s"]:
        results["zero3_over_plain"] = round(zero["samples_per_s"] / plain["samples_per_s"], 3)
    text = json.dumps(results, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
