"""Interleaved inputs (several images and texts in one user turn) through the M-BEIR prompt/collate path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.collate import encode_items, expand_image_pads, fit_prompt
from trace_core.model.inference import TraceEncoder, routed_encode
from trace_core.model.pooling import pool_at
from trace_core.model.prompts import image_paths, item_modality, messages
from trace_core.model.tokens import IMAGE_PAD
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem

STORY = EncodeItem(
    "vist:1",
    7,
    None,
    None,
    (
        ("text", "Find the picture that continues this story."),
        ("text", "We went to the park."),
        ("image", "a.png"),
        ("text", "Then it started to rain."),
        ("image", "b.png"),
        ("text", "Finally the sun came out."),
    ),
)
SINGLE = EncodeItem("coco:1", 0, "Find the image: a red circle.", None)
WITH_IMAGE = EncodeItem("cirr:1", 7, "Make the circle green.", "b.png")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("img")
    Image.new("RGB", (112, 112), (200, 30, 30)).save(root / "a.png")
    Image.new("RGB", (84, 140), (30, 30, 200)).save(root / "b.png")
    mp = ModelParams(tiny=micro_tiny(400, num_layers=2))
    bb = build_backbone(mp, ["we went to the park", "a red circle"] * 20, seed=0, dtype=torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False)).eval()
    return model, bb.proc, root


def test_item_with_segments_has_no_separate_text_or_image() -> None:
    with pytest.raises(ValueError, match="no separate text or img_path"):
        EncodeItem("x", 0, "text", None, (("text", "a"),))
    with pytest.raises(ValueError, match="segment kind"):
        EncodeItem("x", 0, None, None, (("video", "a.mp4"),))  # type: ignore[arg-type]


def test_messages_keep_the_segment_order() -> None:
    content = messages(STORY, "query", "<|emb|>")[1]["content"]
    assert [c["type"] for c in content] == ["text", "text", "image", "text", "image", "text"]
    assert content[-1]["text"] == "Finally the sun came out."
    assert image_paths(STORY) == ["a.png", "b.png"]
    assert image_paths(WITH_IMAGE) == ["b.png"] and image_paths(SINGLE) == []
    assert item_modality(STORY) == "image and text"
    assert item_modality(EncodeItem("x", 0, None, None, (("image", "a.png"),))) == "image"
    # single-image items are unchanged: image first, then text
    assert [c["type"] for c in messages(WITH_IMAGE, "query", "<|emb|>")[1]["content"]] == ["image", "text"]


def test_each_image_slot_gets_its_own_token_count() -> None:
    rendered = f"a{IMAGE_PAD}b{IMAGE_PAD}c"
    assert expand_image_pads(rendered, [2, 3]) == f"a{IMAGE_PAD * 2}b{IMAGE_PAD * 3}c"
    with pytest.raises(ValueError, match="2 image slots for 1 images"):
        expand_image_pads(rendered, [2])


def test_batch_with_interleaved_rows_has_every_image(setup) -> None:
    model, proc, root = setup
    items = [SINGLE, STORY, WITH_IMAGE]
    batch = encode_items(proc, items, ["query"] * 3, [None] * 3, [False] * 3, root, "left")
    grids = batch["image_grid_thw"]
    assert grids.shape[0] == 3  # a.png and b.png of the story, then b.png of the composed query
    per_image = [int(g.prod()) // proc.merge_size**2 for g in grids]
    pads = (batch["input_ids"] == model.ids.image_pad).sum(1).tolist()
    assert pads == [0, per_image[0] + per_image[1], per_image[2]]
    assert batch["mm_token_type_ids"].sum().item() == sum(per_image)


def _full_forward_state(model: TraceModel, proc, item: EncodeItem, root: Path) -> torch.Tensor:
    batch = encode_items(proc, [item], ["query"], [None], [False], root)
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
    return pool_at(hidden, torch.tensor([batch["input_ids"].shape[1] - 1]))[0]


def test_interleaved_rows_encode_as_if_alone(setup) -> None:
    """Left-padded mixed batch (M-RoPE over several images) == each item's own unpadded forward."""
    model, proc, root = setup
    items = [SINGLE, STORY, WITH_IMAGE]
    batch = encode_items(proc, items, ["query"] * 3, [None] * 3, [False] * 3, root, "left")
    res = routed_encode(model, batch, "never", 4)
    for i, item in enumerate(items):
        ref = torch.nn.functional.normalize(_full_forward_state(model, proc, item, root), dim=-1)
        torch.testing.assert_close(res.vectors[i], ref, atol=1e-5, rtol=1e-4)
    enc = TraceEncoder(model, proc, "test").encode_queries(items, root, "always", 3, 2)
    assert len(enc.routes) == 3 and all(r in ("reasoned", "forced") for r in enc.routes)


def test_long_context_is_cut_oldest_first(setup) -> None:
    model, proc, root = setup
    long_story = dataclasses.replace(
        STORY,
        segments=(
            ("text", "Find the picture that continues this story."),
            ("text", "We went to the park " * 30),
            ("image", "a.png"),
            ("text", "Finally the sun came out."),
        ),
    )
    counts = [
        int(g.prod()) // proc.merge_size**2
        for g in encode_items(proc, [long_story], ["query"], [None], [False], root)["image_grid_thw"]
    ]
    full = fit_prompt(proc, long_story, "query", counts, 0)
    short = dataclasses.replace(proc, max_length=len(full) - 40)
    ids = fit_prompt(short, long_story, "query", counts, 1)
    assert len(ids) + 1 <= short.max_length
    text = proc.tokenizer.decode(ids)
    assert "Find the picture that continues this story." in text and "Finally the sun came out." in text
    assert text.count("We went to the park") < 30
    assert (torch.tensor(ids) == model.ids.image_pad).sum().item() == counts[0]
    tight = dataclasses.replace(proc, max_length=counts[0] + 5)
    with pytest.raises(ValueError, match="images and the instruction alone exceed max_length"):
        fit_prompt(tight, long_story, "query", counts, 1)
