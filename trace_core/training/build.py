"""Assembling the trainer (model, collator, sampler, callbacks) and saving the trained model."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trace_core.config import Params
from trace_core.model.backbone import Backbone, build_backbone, count_parameters, family_of, prepare_trainable
from trace_core.model.checkpoint import lora_shell, merged_for_saving, trace_meta, write_model_dir
from trace_core.model.collate import TrainCollator
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.paths import Paths
from trace_core.ranks import is_main_process
from trace_core.training.callbacks import MetricsCallback, ProgressCallback, ValidationCallback
from trace_core.training.data import SampleDataset, split_validation, training_texts
from trace_core.training.trainer import TraceTrainer
from trace_core.types import TrainSample

log = logging.getLogger(__name__)


@dataclass
class TrainParts:
    """Everything the train stage holds while training."""

    trainer: Any
    model: TraceModel
    backbone: Backbone
    val_cb: ValidationCallback
    metrics_cb: MetricsCallback
    n_train: int
    n_val: int
    counts: dict[str, int] = field(default_factory=dict)


def head_config(params: Params) -> HeadConfig:
    """Loss settings from ``params.train``."""
    t = params.train
    return HeadConfig(
        t.lambda_gen,
        t.lambda_ret,
        t.temperature,
        t.learnable_temperature,
        t.gather_across_ranks,
        t.grad_cache_chunk,
        t.lambda_route,
    )


def train_dtype(params: Params) -> torch.dtype:
    """Weights dtype: bf16 when ``train.bf16``."""
    return torch.bfloat16 if params.train.bf16 else torch.float32


def build_model(params: Params, samples: list[TrainSample], tokenizer_dir: Path) -> tuple[TraceModel, Backbone]:
    """Backbone (+ LoRA) wrapped as a :class:`TraceModel`; the tiny tokenizer is kept for resume.

    Every random initialisation here (new ``<|emb|>`` rows, LoRA A matrices) comes from
    ``base.seed``, so it is reproducible and the same on every rank.
    """
    from transformers import set_seed

    set_seed(params.base.seed)
    tokenizer = None
    if params.model.family == "tiny" and tokenizer_dir.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    bb = build_backbone(params.model, training_texts(samples), params.base.seed, train_dtype(params), tokenizer)
    if params.model.family == "tiny" and tokenizer is None:
        bb.proc.tokenizer.save_pretrained(str(tokenizer_dir))
    trainable = prepare_trainable(bb.model, params.model, bb.proc.ids.emb)
    if params.train.deepspeed and params.train.zero_stage == 3:
        register_zero3_token_params(trainable)
    return TraceModel(trainable, bb.proc.ids, head_config(params)), bb


def load_model(params: Params, init_dir: Path) -> tuple[TraceModel, Backbone]:
    """A saved TRACE model (weights, tokenizer, processors) prepared for further training.

    Phase 2 of self-chain training starts here from the phase-1 model: LoRA (when
    ``model.lora``) gets fresh adapters over the merged weights (seeded by ``base.seed``) and the
    softmax temperature is the saved model's (the learned one under ``learnable_temperature``).
    """
    from transformers import set_seed

    from trace_core.model.checkpoint import load_saved, read_meta

    set_seed(params.base.seed)
    meta = read_meta(init_dir)
    bb = load_saved(init_dir, params.model, meta["model_class"], train_dtype(params))
    trainable = prepare_trainable(bb.model, params.model, bb.proc.ids.emb)
    if params.train.deepspeed and params.train.zero_stage == 3:
        register_zero3_token_params(trainable)
    head = dataclasses.replace(head_config(params), temperature=float(meta["temperature"]))
    return TraceModel(trainable, bb.proc.ids, head), bb


def training_arguments(params: Params, out_dir: Path, cuda: bool) -> Any:
    """``TrainingArguments`` from params (the DeepSpeed config is generated, not a file)."""
    from transformers import TrainingArguments

    from trace_core.training.deepspeed_config import deepspeed_config

    tp = params.train
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=tp.per_device_batch_size,
        num_train_epochs=tp.epochs,
        max_steps=tp.max_steps,
        learning_rate=tp.learning_rate,
        lr_scheduler_type=tp.lr_scheduler,
        warmup_steps=tp.warmup_ratio,
        weight_decay=tp.weight_decay,
        max_grad_norm=tp.max_grad_norm,
        bf16=tp.bf16,
        activation_checkpointing=tp.gradient_checkpointing,
        logging_steps=tp.logging_steps,
        save_steps=tp.save_steps,
        save_total_limit=tp.save_total_limit,
        seed=params.base.seed,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not cuda,
        disable_tqdm=True,
        deepspeed=deepspeed_config(tp, cuda) if tp.deepspeed else None,
    )


def register_zero3_token_params(model: Any) -> int:
    """Tell ZeRO-3 which parameters peft's trainable-token layers read; return how many layers.

    ZeRO-3 gathers a module's own parameters in its pre-forward (and pre-backward) hook.
    peft's ``TrainableTokensLayer`` (the ``<|emb|>`` rows of the embeddings and LM head) reads
    its base layer's weight and its delta (in a ``ParameterDict``) directly, without calling
    their modules, so both would stay partitioned (empty) in its forward. Registered as the
    layer's external parameters they are gathered around its forward and backward. (Marking the
    layer a ZeRO-3 leaf instead fails for the input embeddings: a leaf reduces its gradients in
    a module backward hook, which fires before the delta's gradient exists when the module's
    input, the token ids, needs no gradient.)
    """
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    for layer in layers:
        for param in [layer.base_layer.weight, *layer.trainable_tokens_delta.values()]:
            register_external_parameter(layer, param)
    return len(layers)


def build_trainer(
    params: Params, paths: Paths, samples: list[TrainSample], ckpt_root: Path, cuda: bool, init_dir: Path | None = None
) -> TrainParts:
    """Model, data, callbacks and the :class:`TraceTrainer`.

    ``init_dir``: a saved model to continue training from (:func:`load_model`); None builds
    the backbone afresh (:func:`build_model`).
    """
    from transformers import PrinterCallback

    tp = params.train
    train, val = split_validation(samples, tp.val_queries, params.base.seed)
    if init_dir is None:
        model, bb = build_model(params, samples, ckpt_root / "tokenizer")
    else:
        model, bb = load_model(params, init_dir)
    counts = {"params_total": count_parameters(model), "params_trainable": count_parameters(model, trainable_only=True)}
    log.info(
        "model: %s parameters (%s trainable); %d train / %d validation samples",
        f"{counts['params_total']:,}",
        f"{counts['params_trainable']:,}",
        len(train),
        len(val),
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    val_cb = ValidationCallback(
        bb.proc,
        val,
        paths.data_root,
        tp.val_k,
        tp.eval_steps,
        tp.per_device_batch_size,
        tp.val_routing,
        tp.val_max_new_tokens,
    )
    metrics_cb = MetricsCallback(global_batch=tp.per_device_batch_size * world)
    trainer = TraceTrainer(
        model=model,
        args=training_arguments(params, ckpt_root, cuda),
        data_collator=TrainCollator(bb.proc, paths.data_root, tp.hard_negatives),
        train_dataset=SampleDataset(train),
        callbacks=[val_cb, metrics_cb, ProgressCallback()],
        tasks=[s.task_id for s in train] if tp.task_balanced else None,
        sampler_seed=params.base.seed,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; ProgressCallback reports instead
    return TrainParts(trainer, model, bb, val_cb, metrics_cb, len(train), len(val), counts)


#: environment the train stage may set (single-process launch, accelerate's DeepSpeed switch)
SCOPED_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "DS_ACCELERATOR",
    "ACCELERATE_USE_DEEPSPEED",
)


@contextmanager
def deepspeed_scope() -> Iterator[None]:
    """Keep the train stage's process-global distributed state inside the stage.

    ``TrainingArguments`` registers its DeepSpeed config globally (while it is set, every
    ``from_pretrained`` builds under ``zero.Init``) and sets ``ACCELERATE_USE_DEEPSPEED``;
    accelerate caches its state in singletons. On leaving, all of that is undone (env
    restored, config unset, singletons reset), so a later load or training run in the same
    process starts clean. The gloo group DeepSpeed opened stays: deepspeed.comm caches it and
    cannot initialise again after ``destroy_process_group``.
    """
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    saved = {k: os.environ.get(k) for k in SCOPED_ENV}
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        AcceleratorState._reset_state(reset_partial_state=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def full_init(trainer: Any) -> Iterator[None]:
    """Build models unpartitioned while the Trainer's (global) ZeRO-3 config is set.

    ``from_config`` would otherwise partition the new model (``zero.Init``); the config is
    restored afterwards.
    """
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    ds_config = getattr(trainer.args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if ds_config is not None:
            set_hf_deepspeed_config(ds_config)


def full_state_dict(trainer: Any) -> dict[str, torch.Tensor]:
    """Consolidated weights of the trained model (gathers ZeRO-3 partitions)."""
    state: dict[str, torch.Tensor] = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return state


def save_trained(parts: TrainParts, params: Params, out_dir: Path) -> None:
    """Consolidate the weights (every rank), then rank 0 merges LoRA and saves (see :func:`save_merged`)."""
    state = full_state_dict(parts.trainer)
    if not is_main_process():
        return
    with full_init(parts.trainer):
        save_merged(state, params, parts.backbone, out_dir)


def save_merged(state: dict[str, torch.Tensor], params: Params, bb: Backbone, out_dir: Path) -> None:
    """Load a consolidated :class:`TraceModel` state into an unpartitioned copy, merge LoRA, save with meta.

    Args:
        state: the full state dict of the trained :class:`TraceModel` (peft keys under LoRA).
        params: the run's params (structure, dtype, meta).
        bb: the backbone the model was built from (config and processors).
        out_dir: the model folder (written atomically, ``trace_meta.json`` last).
    """
    mp = params.model
    cls = family_of(mp).model_class
    shell = lora_shell(bb.model.config, mp, cls, bb.proc.ids, head_config(params), train_dtype(params))
    shell.load_state_dict(
        {k: v.to(torch.float32) if v.is_floating_point() and not params.train.bf16 else v for k, v in state.items()}
    )
    meta = trace_meta(params, cls, bb.proc.ids.emb, float(shell.temperature()))
    write_model_dir(merged_for_saving(shell.backbone), bb.proc, meta, out_dir)
