"""A micro Qwen2-VL configuration shared by the model tests (seconds to build and run)."""

from __future__ import annotations

from pathlib import Path

from trace_core.config import MiniParams, Params, TinyModelParams, dump_params, parse_params


def micro_tiny(vocab_size: int = 400, num_layers: int = 1) -> TinyModelParams:
    """Tiny-preset params an order of magnitude below the default tiny model."""
    return TinyModelParams(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_layers=num_layers,
        num_heads=2,
        num_kv_heads=1,
        vision_depth=1,
        vision_embed_dim=32,
        vision_num_heads=2,
        vision_mlp_ratio=2,
    )


#: a micro M-BEIR-mini (4 training queries per task) for training tests
SMALL_MINI = MiniParams(
    image_size=56, train_per_task=4, test_per_task=2, pool_per_task=8, val_per_task=1, n_entities=12
)


def micro_train_params(root: Path, tracking: bool = True, **train: object) -> Params:
    """Params of a micro training run under ``root``: micro model and data, a few steps.

    ``train`` overrides ``params.train`` keys; with ``tracking`` MLflow writes under ``root``.
    """
    raw = dump_params(Params())
    raw["model"]["tiny"] = micro_tiny(600).model_dump()
    raw["download"]["mini"] = SMALL_MINI.model_dump()
    raw["train"].update(
        {
            "deepspeed": False,
            "per_device_batch_size": 8,
            "max_steps": 4,
            "logging_steps": 1,
            "eval_steps": 2,
            "save_steps": 2,
            "val_queries": 16,
            "learning_rate": 1e-3,
            **train,
        }
    )
    raw["self_chain"]["enabled"] = False  # stage tests serve the phase-1 model; test_self_chain turns it on
    raw["tracking"].update(
        {
            "enabled": tracking,
            "tracking_uri": f"sqlite:///{root / 'mlruns.db'}",
            "artifact_location": str(root / "mlartifacts"),
        }
    )
    raw["paths"] = {k: str(root / v) for k, v in raw["paths"].items()}
    return parse_params(raw)
