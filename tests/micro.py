"""A micro Qwen2-VL configuration shared by the model tests (seconds to build and run)."""

from __future__ import annotations

from trace_core.config import TinyModelParams


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
