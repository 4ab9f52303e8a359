"""GPU readiness: a few ZeRO-3 bf16 training steps of a Qwen2-VL-2B-sized model (random weights).

The model is built from the published Qwen2-VL-2B-Instruct architecture (no weights are
downloaded) with the TRACE head, trained through the same TraceTrainer/DeepSpeed code path
as ``trace train``, with gradient checkpointing and images at the paper's resolution
(at most 300*28*28 pixels). Prints peak GPU memory and samples/s as JSON. Exits with a
clear message (status 2) where no CUDA device exists.

    deepspeed --num_gpus 1 bench/gpu_zero3_qwen2vl.py --steps 6 --batch 8
    python bench/gpu_zero3_qwen2vl.py --steps 6 --batch 8          # single process
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Qwen2-VL-2B-Instruct architecture (config.json of the release).
QWEN2VL_2B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_layers": 28,
    "num_heads": 12,
    "num_kv_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "vision_depth": 32,
    "vision_embed_dim": 1280,
    "vision_num_heads": 16,
    "vision_mlp_ratio": 4,
}
QWEN2VL_2B_VOCAB = 151936
PAPER_MAX_PIXELS = 300 * 28 * 28


def synthetic_data(root: Path, n: int, side: int) -> list[Any]:
    """``n`` (image+text query, image candidate) samples with random images of ``side`` px."""
    import numpy as np
    from PIL import Image

    from trace_core.types import EncodeItem, TrainSample

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        for kind in ("q", "c"):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / f"{kind}{i}.png")
        q = EncodeItem(f"8:{i + 1}", 7, f"make object {i} red and move it to the left", f"q{i}.png")
        c = EncodeItem(f"8:{n + i + 1}", 7, None, f"c{i}.png")
        out.append(TrainSample(q.id, 7, 8, 0, q, c, "<|emb|>"))
    return out


def run(steps: int, batch: int, side: int) -> dict[str, Any]:
    """Train ``steps`` steps; return peak memory and throughput."""
    import torch

    from trace_core.config import Params, TinyModelParams, dump_params, parse_params
    from trace_core.paths import Paths
    from trace_core.training.build import build_trainer
    from trace_core.training.train import configure_environment

    tmp = Path(tempfile.mkdtemp(prefix="trace-gpu-"))
    raw = dump_params(Params())
    tiny = TinyModelParams(vocab_size=4096, min_vocab_size=QWEN2VL_2B_VOCAB, **QWEN2VL_2B)
    raw["model"].update(tiny=tiny.model_dump(), max_pixels=PAPER_MAX_PIXELS, freeze_vision=True, lora=True)
    raw["train"].update(
        bf16=True,
        gradient_checkpointing=True,
        deepspeed=True,
        zero_stage=3,
        per_device_batch_size=batch,
        max_steps=steps,
        eval_steps=0,
        save_steps=10**9,
        logging_steps=1,
        val_queries=1,
        lambda_gen=1.0,
    )
    raw["tracking"]["enabled"] = False
    raw["paths"] = {k: str(tmp / v) for k, v in raw["paths"].items()}
    params = parse_params(raw)
    paths = Paths.from_params(params)
    (paths.data_root).mkdir(parents=True)
    samples = synthetic_data(paths.data_root, batch * (steps + 1) + 1, side)
    configure_environment(params, paths, cuda=True)
    parts = build_trainer(params, paths, samples, tmp / "ckpt", cuda=True)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    parts.trainer.train()
    wall = time.perf_counter() - t0
    return {
        "model": f"Qwen2-VL-2B architecture, random weights, LoRA r={params.model.lora_r}",
        "params_total": parts.counts["params_total"],
        "image_px": side,
        "max_pixels": PAPER_MAX_PIXELS,
        "steps": parts.trainer.state.global_step,
        "per_device_batch": batch,
        "samples_per_s": round(parts.trainer.state.global_step * batch / wall, 3),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "device": torch.cuda.get_device_name(0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-px", type=int, default=476, help="square image side (476 px = 289 merged tokens)")
    ap.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            json.dumps(
                {"error": "no CUDA device: this GPU readiness check needs one (torch.cuda.is_available() is False)"}
            )
        )
        sys.exit(2)
    print(json.dumps(run(a.steps, a.batch, a.image_px), indent=2))


if __name__ == "__main__":
    main()
