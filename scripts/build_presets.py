"""Regenerate presets/*.yaml: params.yaml (the full schema) with each preset's overrides.

Run after adding params keys: ``.venv/bin/python scripts/build_presets.py``; a test checks
that every preset has exactly params.yaml's keys and passes ``load_params``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from trace_core.config import PathsParams, load_params, set_dotted

ROOT = Path(__file__).resolve().parents[1]
TEACHER = {
    "kind": "openai",
    "model": "Qwen/Qwen2.5-VL-72B-Instruct",
    "base_url": "http://127.0.0.1:8000/v1",
    "batch_size": 32,
    "concurrency": 32,
    "timeout_s": 300.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "full-qwen2.5-vl-7b": {
        "base.profile": "full",
        "base.run_name": "full-qwen2.5-vl-7b",
        "download.profile": "full",
        "download.include_images": True,
        **{f"cot_generate.teacher.{k}": v for k, v in TEACHER.items()},
        "cot_generate.shard_size": 4096,
        "cot_curate.verifier": "openai",
        **{f"cot_curate.verifier_teacher.{k}": v for k, v in TEACHER.items()},
        "cot_curate.tokenizer": "Qwen/Qwen2.5-VL-72B-Instruct",
        "model.family": "qwen2.5-vl-7b",
        "model.name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct",
        "model.max_pixels": 300 * 28 * 28,  # LamRA/TRACE: at most 300*28*28 image pixels
        "model.max_length": 1024,
        "evaluate_zeroshot.max_length": 2048,  # VIST queries hold four images of up to 300 tokens each
        "model.lora": True,
        "model.freeze_vision": True,
        "train.lambda_gen": 1.0,
        "train.lambda_route": 0.0,  # the paper's loss; see README "Routing decision loss"
        "train.warmup_ratio": 0.03,
        "train.per_device_batch_size": 64,  # x 16 GPUs = the paper's global batch 1024
        "train.epochs": 1.0,
        "train.learning_rate": 2e-4,
        "train.bf16": True,
        "train.gradient_checkpointing": True,
        "train.logging_steps": 10,
        "train.eval_steps": 500,
        "train.save_steps": 1000,
        "train.val_queries": 2000,
        "export.max_new_tokens": 256,
        "train.val_max_new_tokens": 256,
        # self-chain phase 2 is on in the mini default (ablation: +2.7 [+1.5, +3.9] points over adaptive) but
        # unmeasured at 7B, where decoding every z=1 training query costs GPU-hours: off until measured there
        "self_chain.enabled": False,
        "self_chain.max_new_tokens": 256,  # as export's cap
        "self_chain.learning_rate": 5e-5,  # a quarter of train.learning_rate, as the mini default
        "self_chain.batch_size": 64,
        "export.batch_size": 64,
        "export.shard_size": 65536,
        "export.num_workers": 4,  # image decoding + collation beside the GPU forward
        "index.uri": "http://127.0.0.1:19530",
        "index.index_type": "HNSW",  # the 5.6 M-candidate union pool (and serving): approximate
        "index.local_index_type": "FLAT",  # the 16 local pools: exhaustive, as the M-BEIR protocol scores them
        "index.metric": "IP",
        "index.insert_batch": 8192,
    },
}


#: the full preset with only sizes and paths changed: a toy checkpoint in the hub layout
#: (``scripts/make_checkpoint.py``), a small M-BEIR-mini laid out by the full profile's
#: ``from_dir`` path, a few steps; everything under .trace/rehearsal. ``make rehearsal``
#: (scripts/rehearsal.py) runs it on two ranks.
REHEARSAL_ROOT = ".trace/rehearsal"
REHEARSAL: dict[str, Any] = {
    **{f"paths.{k}": f"{REHEARSAL_ROOT}/{v}" for k, v in PathsParams().model_dump().items()},
    "base.run_name": "rehearsal",
    "download.from_dir": f"{REHEARSAL_ROOT}/mbeir-source",  # M-BEIR-mini (same layout) written there first
    "download.mini.image_size": 56,
    "download.mini.train_per_task": 4,
    "download.mini.test_per_task": 2,
    "download.mini.pool_per_task": 6,
    "download.mini.val_per_task": 1,
    "download.mini.n_entities": 12,
    "model.name_or_path": f"{REHEARSAL_ROOT}/qwen2.5-vl-7b-toy",
    "model.tiny.vocab_size": 600,  # the toy checkpoint's sizes
    "model.tiny.hidden_size": 32,
    "model.tiny.intermediate_size": 64,
    "model.tiny.num_layers": 2,
    "model.tiny.num_heads": 2,
    "model.tiny.num_kv_heads": 1,
    "model.tiny.vision_depth": 2,
    "model.tiny.vision_embed_dim": 32,
    "model.tiny.vision_num_heads": 2,
    "model.lora_r": 8,
    "model.lora_alpha": 16,
    "train.per_device_batch_size": 4,
    "train.grad_cache_chunk": 4,  # rows = 2 x batch: two chunks per step
    "train.max_steps": 6,
    "train.logging_steps": 1,
    "train.save_steps": 2,
    "train.eval_steps": 3,
    "train.val_queries": 8,
    "train.val_max_new_tokens": 4,
    "export.max_new_tokens": 4,
    "export.batch_size": 8,
    "export.shard_size": 32,
    "index.uri": None,  # Milvus Lite file under paths.index_dir
    "index.insert_batch": 256,
    "tracking.tracking_uri": f"sqlite:///{REHEARSAL_ROOT}/mlruns.db",
    "tracking.artifact_location": f"{REHEARSAL_ROOT}/mlartifacts",
}
PRESETS["rehearsal"] = {**PRESETS["full-qwen2.5-vl-7b"], **REHEARSAL}


def apply(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys that already exist in ``raw`` (a typo raises KeyError)."""
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return raw


def main() -> None:
    """Write every preset and check it loads."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, overrides in PRESETS.items():
        raw = apply(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
        path = ROOT / "presets" / f"{name}.yaml"
        head = f"# TRACE preset {name}: `make use-preset PRESET={name}` copies it over params.yaml.\n"
        if name == "rehearsal":
            head = "# TRACE rehearsal: the full preset with sizes and paths overridden (make rehearsal).\n"
        head += "# Generated by scripts/build_presets.py from params.yaml; edit the overrides there.\n"
        path.write_text(head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        load_params(path)
        logging.info("wrote %s", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
