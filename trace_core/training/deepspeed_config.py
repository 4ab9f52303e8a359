"""DeepSpeed config generated from ``params.train`` (pure; validated in tests without an engine)."""

from __future__ import annotations

from typing import Any

from trace_core.config import TrainParams


def deepspeed_config(tp: TrainParams, cuda: bool = True) -> dict[str, Any]:
    """A ZeRO config dict for ``TrainingArguments(deepspeed=...)``.

    Micro batch, clipping and precision are concrete values from params (the Trainer checks
    them against its own arguments, which come from the same params). Without offload the
    Trainer's AdamW is used as a client optimizer; with offload DeepSpeed's (CPU) AdamW is
    configured, because ZeRO-Offload needs it; without CUDA that optimizer is torch's AdamW
    (``torch_adam``): DeepSpeed's own CPU Adam is a C++ op compiled at first use, which sat
    for minutes on every rank before the first step on the CPU accelerator.

    Args:
        tp: the ``train`` params section.
        cuda: whether training runs on CUDA devices.

    Returns:
        The DeepSpeed config mapping.
    """
    zero: dict[str, Any] = {
        "stage": tp.zero_stage,
        "overlap_comm": tp.zero_stage > 0,
        "contiguous_gradients": True,
    }
    if tp.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": tp.per_device_batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": tp.max_grad_norm,
        "bf16": {"enabled": tp.bf16},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if tp.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if tp.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": tp.learning_rate, "weight_decay": tp.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8},
        }
        if not cuda:
            cfg["optimizer"]["params"]["torch_adam"] = True
    return cfg
