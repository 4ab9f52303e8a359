"""The transformers teacher on a tiny random Qwen2-VL saved to tmp: batching and plumbing only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from trace_core.config import CotCurateParams, TeacherParams
from trace_core.cot.filters import FilterInput, apply_rules
from trace_core.cot.prompts import SYSTEM_PROMPTS, TeacherRequest
from trace_core.cot.teacher import make_teacher
from trace_core.cot.text import token_counter


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from trace_core.model.tokens import build_tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny_teacher")
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


def test_transformers_teacher_batches_rows(tiny_checkpoint: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (56, 84), (200, 30, 30)).save(img)
    cfg = TeacherParams(kind="transformers", model=str(tiny_checkpoint), batch_size=2, max_new_tokens=6,
                        device="cpu", dtype="float32", max_pixels=12544)  # fmt: skip
    teacher = make_teacher(cfg, seed=0)
    reqs = [
        TeacherRequest("8:1", "chain", SYSTEM_PROMPTS["edit"], "make the red circle green", str(img)),
        TeacherRequest("0:1", "chain", SYSTEM_PROMPTS["visual"], "a red circle", None),
        TeacherRequest("8:3", "chain", SYSTEM_PROMPTS["edit"], "broken", str(tmp_path / "missing.png")),
        TeacherRequest("8:2", "chain", SYSTEM_PROMPTS["edit"], "make the blue square small", str(img)),
    ]
    out = teacher.generate(reqs)
    teacher.close()
    assert [r.id for r in out] == ["8:1", "0:1", "8:3", "8:2"]
    # batches: [8:1 image + 0:1 text-only, left-padded together], [8:2]; 8:3 fails alone
    assert all(isinstance(r.text, str) and r.error is None for r in (out[0], out[1], out[3]))
    assert out[2].text is None and "missing.png" in (out[2].error or "")
    recs = [FilterInput(r.id, r.text, "q", None, None) for r in (out[0], out[1], out[3])]
    res = apply_rules(recs, CotCurateParams(), token_counter(None, 4))
    assert len(res.dropped) == 3 and {rule for _, rule, _ in res.dropped} == {"format"}  # gibberish is dropped
