"""Toy checkpoints in the exact hub layout load through the full preset's code path (both families)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from micro import micro_tiny
from PIL import Image

from trace_core.config import parse_params
from trace_core.model.backbone import build_backbone
from trace_core.model.fixture_checkpoint import QWEN_SPECIAL_TOKENS, write_fixture_checkpoint
from trace_core.model.inference import TraceEncoder
from trace_core.model.tokens import IM_END, IMAGE_PAD, VISION_START
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem

ROOT = Path(__file__).resolve().parents[2]
HUB_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "chat_template.json",
}


def full_model_params(name_or_path: Path, family: str | None = None):  # type: ignore[no-untyped-def]
    """``model`` of the full preset with only ``name_or_path`` (and the family's size) changed."""
    raw = yaml.safe_load((ROOT / "presets" / "full-qwen2.5-vl-7b.yaml").read_text())
    raw["model"]["name_or_path"] = str(name_or_path)
    if family:
        raw["model"]["family"] = family
    return parse_params(raw).model


@pytest.mark.parametrize(
    ("family", "cls"),
    [("qwen2.5-vl-7b", "Qwen2_5_VLForConditionalGeneration"), ("qwen2-vl-2b", "Qwen2VLForConditionalGeneration")],
)
def test_fixture_checkpoint_loads_like_the_hub_one(tmp_path: Path, family: str, cls: str) -> None:
    ckpt = write_fixture_checkpoint(tmp_path / "ckpt", family, micro_tiny(300), seed=1)
    assert HUB_FILES <= {p.name for p in ckpt.iterdir()}
    config = json.loads((ckpt / "config.json").read_text())
    assert config["architectures"] == [cls]
    tok_cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "Qwen2Tokenizer" and tok_cfg["eos_token"] == IM_END
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert pre["patch_size"] == 14 and pre["merge_size"] == 2

    mp = full_model_params(ckpt, family)
    bb = build_backbone(mp, [], seed=0, dtype=torch.float32)  # the hub path: load_pretrained
    assert type(bb.model).__name__ == cls and bb.family == family
    tok = bb.proc.tokenizer
    specials = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert specials == list(range(specials[0], specials[0] + len(specials)))  # Qwen's order, after the BPE
    assert bb.proc.ids.emb == len(tok) - 1  # <|emb|> added by load_pretrained
    assert bb.model.get_input_embeddings().weight.shape[0] == len(tok)
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert VISION_START + IMAGE_PAD in text

    Image.new("RGB", (56, 84), (200, 30, 30)).save(tmp_path / "a.png")
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False))
    enc = TraceEncoder(model, bb.proc, "fixture")
    items = [EncodeItem("1:1", 0, "a red square", "a.png"), EncodeItem("1:2", 0, "only text", None)]
    vecs = enc.encode_candidates(items, tmp_path, batch_size=2)
    assert vecs.shape == (2, 32) and abs(float((vecs**2).sum(1)[0]) - 1.0) < 1e-5


def test_fixture_checkpoint_rejects_tiny(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a hub family"):
        write_fixture_checkpoint(tmp_path / "x", "tiny", micro_tiny(300))
