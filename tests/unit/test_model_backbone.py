"""Tiny preset: tokenizer, config, save/load round trip, trainable parts (full and LoRA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from micro import micro_tiny

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone, family_of, mrope_section, prepare_trainable
from trace_core.model.checkpoint import load_saved, merged_for_saving, save_backbone
from trace_core.model.prompts import messages
from trace_core.model.tokens import IMAGE_PAD, special_ids
from trace_core.types import EncodeItem

MICRO = micro_tiny(400)
TEXTS = ["a red circle left of a blue square", "make the circle green"] * 20


def _bb(**kw: object):
    return build_backbone(ModelParams(tiny=MICRO, **kw), TEXTS, seed=0, dtype=torch.float32)


def test_tokenizer_specials_and_template() -> None:
    bb = _bb()
    tok = bb.proc.tokenizer
    ids = special_ids(tok, "<|emb|>")
    assert tok("x<|emb|>", add_special_tokens=False)["input_ids"][-1] == ids.emb
    text = tok.apply_chat_template(
        messages(EncodeItem("1:1", 7, "make it red", "a.png"), "query", "<|emb|>"),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.count(IMAGE_PAD) == 1 and text.endswith("<|im_start|>assistant\n")
    assert bb.model.config.image_token_id == ids.image_pad
    assert tok.decode(tok("a red circle", add_special_tokens=False)["input_ids"]) == "a red circle"


def test_mrope_section_sums_to_half_head_dim() -> None:
    assert mrope_section(128) == [16, 24, 24]
    assert sum(mrope_section(16)) == 8


def test_unknown_family_is_named() -> None:
    with pytest.raises(ValueError, match="'tiny'"):  # rejected when params load
        ModelParams(family="llava")
    with pytest.raises(ValueError, match="known: tiny"):
        family_of(ModelParams.model_construct(family="llava"))


def test_save_load_round_trip(tmp_path: Path) -> None:
    bb = _bb()
    save_backbone(bb.model, bb.proc, tmp_path)
    back = load_saved(tmp_path, ModelParams(tiny=MICRO), "Qwen2VLForConditionalGeneration", torch.float32)
    ids = torch.tensor([[bb.proc.ids.emb, 5, 9, 11]])
    with torch.no_grad():
        torch.testing.assert_close(back.model(input_ids=ids).logits, bb.model(input_ids=ids).logits)
    assert back.proc.ids == bb.proc.ids
    assert back.proc.image_processor.size == bb.proc.image_processor.size


def test_full_finetune_freezes_vision_but_merger() -> None:
    bb = _bb(freeze_vision=True, train_merger=True)
    m = prepare_trainable(bb.model, ModelParams(tiny=MICRO, freeze_vision=True), bb.proc.ids.emb)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("visual.merger" in n for n in trainable)
    assert not any("visual.blocks" in n or "patch_embed" in n for n in trainable)
    assert any("lm_head" in n for n in trainable)


def test_lora_keeps_emb_rows_trainable_and_merges() -> None:
    mp = ModelParams(tiny=MICRO, lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, freeze_vision=True)
    bb = build_backbone(mp, TEXTS, seed=0, dtype=torch.float32)
    emb = bb.proc.ids.emb
    m = prepare_trainable(bb.model, mp, emb)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert any("embed_tokens" in n and "trainable_tokens" in n for n in trainable)
    assert any("lm_head" in n and "trainable_tokens" in n for n in trainable)
    assert any("lora_A" in n and "language_model" in n for n in trainable)
    assert not any("visual.blocks" in n for n in trainable)
    before = m.get_base_model().lm_head.weight.detach().clone()
    delta = [p for n, p in m.named_parameters() if "lm_head" in n and "trainable_tokens" in n][0]
    with torch.no_grad():
        delta.add_(1.0)
    merged = merged_for_saving(m)
    changed = (merged.lm_head.weight - before).abs().sum(dim=1).nonzero().flatten().tolist()
    assert changed == [emb]
