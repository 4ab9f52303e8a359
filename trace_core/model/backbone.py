"""Backbones through ``transformers``: a registry of Qwen2-VL families and the ``tiny`` preset.

Nothing is vendored: real checkpoints load with ``from_pretrained`` (local path or hub id)
and the tiny preset is ``Qwen2VLForConditionalGeneration`` built from a small config with
random weights and a tokenizer trained offline (:func:`trace_core.model.tokens.build_tiny_tokenizer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trace_core.config import ModelParams, TinyModelParams
from trace_core.model.collate import Processors
from trace_core.model.prompts import all_prompt_texts
from trace_core.model.tokens import (
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    add_emb_token,
    build_tiny_tokenizer,
    special_ids,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """A supported backbone family."""

    hub_id: str | None
    model_class: str


FAMILIES: dict[str, Family] = {
    "tiny": Family(None, "Qwen2VLForConditionalGeneration"),
    "qwen2-vl-2b": Family("Qwen/Qwen2-VL-2B-Instruct", "Qwen2VLForConditionalGeneration"),
    "qwen2-vl-7b": Family("Qwen/Qwen2-VL-7B-Instruct", "Qwen2VLForConditionalGeneration"),
    "qwen2.5-vl-3b": Family("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2_5_VLForConditionalGeneration"),
    "qwen2.5-vl-7b": Family("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2_5_VLForConditionalGeneration"),
}


def family_of(mp: ModelParams) -> Family:
    """The registry entry of ``model.family``; unknown names list the known ones."""
    if mp.family not in FAMILIES:
        raise ValueError(f"model.family '{mp.family}' unknown; known: {', '.join(FAMILIES)}")
    return FAMILIES[mp.family]


def model_class(name: str) -> Any:
    """The ``transformers`` class of a family by name."""
    import transformers

    return getattr(transformers, name)


@dataclass
class Backbone:
    """A loaded backbone with its input processors."""

    model: Any
    proc: Processors
    family: str


def mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim / 2`` rotary frequencies over (t, h, w) like Qwen2-VL (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_config(tiny: TinyModelParams, tokenizer: Any) -> Any:
    """A Qwen2-VL config of the tiny preset (token ids from ``tokenizer``)."""
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)}
    text = {
        "vocab_size": max(len(tokenizer), tiny.min_vocab_size),
        "hidden_size": tiny.hidden_size,
        "intermediate_size": tiny.intermediate_size,
        "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads,
        "num_key_value_heads": tiny.num_kv_heads,
        "max_position_embeddings": tiny.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": tiny.rope_theta,
            "mrope_section": mrope_section(tiny.hidden_size // tiny.num_heads),
        },
        "bos_token_id": None,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": tiny.vision_depth,
        "embed_dim": tiny.vision_embed_dim,
        "num_heads": tiny.vision_num_heads,
        "hidden_size": tiny.hidden_size,
        "mlp_ratio": tiny.vision_mlp_ratio,
    }
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )


def image_processor(mp: ModelParams, source: str | Path | None = None) -> Any:
    """Qwen2-VL image processor (PIL backend) with ``min/max_pixels`` from params."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if source is None:
        return Qwen2VLImageProcessorPil(min_pixels=mp.min_pixels, max_pixels=mp.max_pixels)
    return Qwen2VLImageProcessorPil.from_pretrained(str(source), min_pixels=mp.min_pixels, max_pixels=mp.max_pixels)


def processors(tokenizer: Any, improc: Any, mp: ModelParams, merge_size: int) -> Processors:
    """Bundle tokenizer and image processor with the special ids."""
    return Processors(tokenizer, improc, special_ids(tokenizer, mp.emb_token), mp.emb_token, mp.max_length, merge_size)


def build_tiny(mp: ModelParams, texts: Iterable[str], seed: int, tokenizer: Any = None) -> Backbone:
    """The tiny preset: tokenizer trained on ``texts`` + prompts (or given), random Qwen2-VL weights."""
    from transformers import Qwen2VLForConditionalGeneration

    if tokenizer is None:
        tokenizer = build_tiny_tokenizer([*all_prompt_texts(mp.emb_token), *texts], mp.tiny.vocab_size, mp.emb_token)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(tiny_config(mp.tiny, tokenizer))
    vision_config: Any = model.config.vision_config  # typed as a union by transformers
    merge = int(vision_config.spatial_merge_size)
    log.info("tiny backbone: %.2fM parameters, vocab %d", count_parameters(model) / 1e6, len(tokenizer))
    return Backbone(model, processors(tokenizer, image_processor(mp), mp, merge), "tiny")


def load_pretrained(mp: ModelParams, dtype: torch.dtype) -> Backbone:
    """A real checkpoint (local path or hub id) with ``<|emb|>`` added and embeddings resized."""
    from transformers import AutoTokenizer

    fam = family_of(mp)
    source = mp.name_or_path or fam.hub_id
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = model_class(fam.model_class).from_pretrained(source, dtype=dtype)
    if add_emb_token(tokenizer, mp.emb_token):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    tokenizer.padding_side = "right"
    merge = model.config.vision_config.spatial_merge_size
    return Backbone(model, processors(tokenizer, image_processor(mp, source), mp, merge), mp.family)


def build_backbone(
    mp: ModelParams, texts: Iterable[str], seed: int, dtype: torch.dtype, tokenizer: Any = None
) -> Backbone:
    """The backbone named by ``model.family`` (tiny: trained or given tokenizer + random weights)."""
    family_of(mp)
    if mp.family == "tiny":
        return build_tiny(mp, texts, seed, tokenizer)
    return load_pretrained(mp, dtype)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


LLM_LINEAR_PATTERN = r".*language_model.*\.({names})"


def prepare_trainable(model: Any, mp: ModelParams, emb_id: int) -> Any:
    """Freeze/unfreeze per params; with ``model.lora`` wrap in peft LoRA.

    The ``<|emb|>`` rows of the input embeddings and of the LM head stay trainable under
    LoRA (peft trainable tokens). The vision tower is frozen when ``freeze_vision`` (its
    merger/projector then trains iff ``train_merger``).

    Returns:
        The model to train (the peft model under LoRA, else ``model`` itself).
    """
    visual = model.model.visual
    if mp.lora:
        from peft import LoraConfig, get_peft_model

        save = ["visual"] if not mp.freeze_vision else (["merger"] if mp.train_merger else [])
        cfg = LoraConfig(
            r=mp.lora_r,
            lora_alpha=mp.lora_alpha,
            lora_dropout=mp.lora_dropout,
            target_modules=LLM_LINEAR_PATTERN.format(names="|".join(mp.lora_target_modules)),
            trainable_token_indices={"embed_tokens": [emb_id], "lm_head": [emb_id]},
            modules_to_save=save or None,
        )
        return get_peft_model(model, cfg)
    for p in model.parameters():
        p.requires_grad_(True)
    if mp.freeze_vision:
        for p in visual.parameters():
            p.requires_grad_(False)
        for p in visual.merger.parameters():
            p.requires_grad_(mp.train_merger)
    return model
