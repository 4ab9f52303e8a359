"""The transformers teacher on a tiny random Qwen2-VL saved to tmp: batching and plumbing only."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_teacher import build_tiny_teacher
from PIL import Image

from trace_core.config import CotCurateParams, TeacherParams
from trace_core.cot.filters import FilterInput, apply_rules
from trace_core.cot.prompts import SYSTEM_PROMPTS, TeacherRequest
from trace_core.cot.teacher import make_teacher
from trace_core.cot.text import token_counter


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


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


def test_verify_request_with_image_target_sends_both_images(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A verify request of an image-only target carries the query and the target image (two image blocks)."""
    from trace_core.cot.parse import Chain
    from trace_core.cot.teacher_hf import chat_prompt, load_images
    from trace_core.cot.verify import VerifyItem, verify_request

    for name, colour in (("q.png", (10, 200, 10)), ("t.png", (200, 10, 10))):
        Image.new("RGB", (40, 32), colour).save(tmp_path / name)
    item = VerifyItem(
        "8:1", 7, "make it red", "q.png", None, None, Chain("The source is green.", "A red one."), "t.png"
    )
    req = verify_request(item, tmp_path)
    assert req.images == (str(tmp_path / "q.png"), str(tmp_path / "t.png"))
    assert "second attached image" in req.user
    images, failed = load_images([req])
    assert not failed and [im.getpixel((0, 0)) for im in images["8:1"]] == [(10, 200, 10), (200, 10, 10)]
    assert chat_prompt("s", "u", [2, 3]).count("<|vision_start|>") == 2
    cfg = TeacherParams(kind="transformers", model=str(tiny_checkpoint), batch_size=2, max_new_tokens=4,
                        device="cpu", dtype="float32", max_pixels=12544)  # fmt: skip
    teacher = make_teacher(cfg, seed=0)
    text_target = verify_request(
        VerifyItem("8:2", 7, "make it red", "q.png", "A red one.", None, Chain("r", "a"), "t.png"), tmp_path
    )
    assert text_target.images == (str(tmp_path / "q.png"),)  # a target with text is given as text
    out = teacher.generate([req, text_target])
    teacher.close()
    assert [r.error for r in out] == [None, None] and all(isinstance(r.text, str) for r in out)
