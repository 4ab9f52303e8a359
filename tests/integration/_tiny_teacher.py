"""A tiny random Qwen2-VL checkpoint saved to disk: a ``transformers`` teacher that runs in seconds."""

from __future__ import annotations

from pathlib import Path

from trace_core.cot.prompts import SYSTEM_PROMPTS


def build_tiny_teacher(out: Path) -> Path:
    """Save a 1-layer, 32-wide Qwen2-VL with a tiny tokenizer and image processor under ``out``."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from trace_core.model.tokens import build_tiny_tokenizer

    tok = build_tiny_tokenizer([*SYSTEM_PROMPTS.values(), "a small red circle at the top left"], 400, "<|emb|>")
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id},
        vision_config={"depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 32, "mlp_ratio": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    tok.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12544).save_pretrained(out)
    return out
