"""Saved TRACE models: save, load, LoRA merge, ``trace_meta.json`` and the model id.

A saved model is a folder in the Hugging Face layout (config, safetensors weights,
tokenizer, image processor) plus ``trace_meta.json``, written last into a temp folder that
is renamed into place, so the folder's existence means a complete model. LoRA adapters are
merged into the weights before saving (the folder is a plain ``transformers`` checkpoint).

Under DeepSpeed ZeRO-3 the trained parameters are partitioned over ranks; the train stage
consolidates the 16-bit weights first (``stage3_gather_16bit_weights_on_model_save``), loads
them into an unpartitioned copy of the peft model (:func:`lora_shell`) and merges there
(:func:`merged_for_saving` refuses partitioned parameters rather than save empty tensors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from trace_core.config import ModelParams, Params, dump_params
from trace_core.io import sha256_file
from trace_core.model.backbone import Backbone, image_processor, model_class, prepare_trainable, processors
from trace_core.model.collate import Processors
from trace_core.model.trace_model import HeadConfig, TraceModel

log = logging.getLogger(__name__)
META_FILE = "trace_meta.json"


def save_backbone(model: Any, proc: Processors, out_dir: Path) -> None:
    """Save model weights/config, tokenizer and image processor side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    proc.tokenizer.save_pretrained(out_dir)
    proc.image_processor.save_pretrained(out_dir)


def load_saved(model_dir: Path, mp: ModelParams, model_class_name: str, dtype: torch.dtype) -> Backbone:
    """Load what :func:`save_backbone` wrote (the parts explicitly; see ENVIRONMENT.md)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = model_class(model_class_name).from_pretrained(str(model_dir), dtype=dtype)
    merge = model.config.vision_config.spatial_merge_size
    return Backbone(model, processors(tokenizer, image_processor(mp, model_dir), mp, merge), mp.family)


def is_partitioned(model: Any) -> bool:
    """Whether some parameter is a ZeRO-3 partition (its data lives on several ranks)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def merged_for_saving(model: Any) -> Any:
    """The plain ``transformers`` model to save: LoRA (and trainable token rows) merged into the weights.

    Raises:
        ValueError: for ZeRO-3 partitioned parameters (consolidate them first, see :func:`lora_shell`).
    """
    if is_partitioned(model):
        raise ValueError("cannot merge LoRA into ZeRO-3 partitioned parameters: consolidate the 16-bit weights first")
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def lora_shell(config: Any, mp: ModelParams, model_class_name: str, ids: Any, head: HeadConfig, dtype: Any) -> Any:
    """An unpartitioned :class:`TraceModel` of the same structure as the trained one (peft under LoRA).

    Its weights are random until a consolidated state dict is loaded into it.
    """
    fresh = model_class(model_class_name)(config).to(dtype)
    return TraceModel(prepare_trainable(fresh, mp, ids.emb), ids, head)


def trace_meta(params: Params, model_class_name: str, emb_token_id: int, temperature: float) -> dict[str, Any]:
    """The ``trace_meta.json`` content: family, class, ``<|emb|>``, dtype, temperature and all params."""
    mp = params.model
    return {
        "family": mp.family,
        "model_class": model_class_name,
        "emb_token": mp.emb_token,
        "emb_token_id": emb_token_id,
        "dtype": "bfloat16" if params.train.bf16 else "float32",
        "temperature": temperature,
        "params": dump_params(params),
    }


def read_meta(model_dir: Path) -> dict[str, Any]:
    """``trace_meta.json`` of a saved model; a clear error when the folder is not one."""
    path = model_dir / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a saved TRACE model ({META_FILE} missing)")
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta


def write_model_dir(model: Any, proc: Processors, meta: dict[str, Any], out_dir: Path) -> None:
    """Save model + processors + meta (last) into a temp folder, then rename it to ``out_dir``."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_backbone(model, proc, tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("saved model to %s", out_dir)


def model_hash(model_dir: Path) -> str:
    """Stable id of saved weights: sha256 of the safetensors files, first 16 hex digits."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    return sha256_file(files[0])[:16] if len(files) == 1 else sha256_file_list(files)[:16]


def sha256_file_list(files: list[Path]) -> str:
    """sha256 over the hashes of several files (sharded checkpoints)."""
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
