"""Prompt shapes rendered once (issue 16): the fast collation path equals the per-item chat template path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.collate import Processors, _render, encode_items, expand_image_pads, render_prompt
from trace_core.model.prompts import image_paths, messages
from trace_core.types import EncodeItem, Side

ITEMS = [
    EncodeItem("t:1", 0, "Find the image: a red circle.", None),
    EncodeItem("t:2", 3, None, "a.png"),
    EncodeItem("t:3", 7, "  edge spaces, a\nnewline, <b>markup</b> & {{ jinja }} {% raw %} \u00e9t\u00e9 ", "b.png"),
    EncodeItem("t:4", 7, None, None, (("text", "first"), ("image", "a.png"), ("text", "second"), ("image", "b.png"))),
    EncodeItem("t:5", 1, "", None),  # empty text: rendered by the template (fallback)
    EncodeItem("t:6", 2, "short text", None),
]
SIDES: list[Side] = ["query", "candidate"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Processors, Path]:
    root = tmp_path_factory.mktemp("img")
    Image.new("RGB", (112, 112), (200, 30, 30)).save(root / "a.png")
    Image.new("RGB", (84, 140), (30, 30, 200)).save(root / "b.png")
    mp = ModelParams(tiny=micro_tiny(400, num_layers=1), max_length=1024)
    bb = build_backbone(mp, ["a red circle", "edge spaces markup"] * 20, seed=0, dtype=torch.float32)
    return bb.proc, root


@pytest.mark.parametrize("side", SIDES)
def test_render_prompt_equals_the_chat_template(setup, side: Side) -> None:
    proc, _ = setup
    for item in ITEMS:
        msgs = messages(item, side, proc.emb_token)
        assert render_prompt(proc, msgs) == _render(proc.tokenizer, msgs), item.id
        assert render_prompt(proc, msgs) == _render(proc.tokenizer, msgs), item.id  # from the cache
    assert any(v is not None for v in proc.prompt_cache.values())


def test_a_template_that_rewrites_text_is_rendered_per_item(setup) -> None:
    """A template that trims text fails the verbatim check: prompts with text are then rendered (still equal)."""
    proc, _ = setup
    tok = proc.tokenizer
    trimming = dataclasses.replace(proc, prompt_cache={})
    old = tok.chat_template
    tok.chat_template = old.replace("{{ content['text'] }}", "{{ content['text'] | trim }}")
    assert tok.chat_template != old
    try:
        for item in ITEMS:
            msgs = messages(item, "query", proc.emb_token)
            assert render_prompt(trimming, msgs) == _render(tok, msgs), item.id
        with_text = [v for (_, kinds), v in trimming.prompt_cache.items() if "text" in kinds]
        assert with_text and all(v is None for v in with_text)  # image-only shapes have no text to rewrite
    finally:
        tok.chat_template = old


def _reference_ids(proc: Processors, item: EncodeItem, side: Side, counts: list[int], resp: str | None) -> list[int]:
    """One item as collation did before prompt shapes were cached: template, then tokenizer, per item."""
    text = expand_image_pads(_render(proc.tokenizer, messages(item, side, proc.emb_token)), counts)
    ids = list(proc.tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids + (list(proc.tokenizer(resp, add_special_tokens=False)["input_ids"]) if resp else [])


@pytest.mark.parametrize("side", SIDES)
def test_batched_collation_equals_per_item_tokenisation(setup, side: Side) -> None:
    proc, root = setup
    proc = dataclasses.replace(proc, prompt_cache={})
    resp = proc.emb_token if side == "candidate" else None
    n = len(ITEMS)
    batch = encode_items(proc, ITEMS, [side] * n, [resp] * n, [False] * n, root)
    per_image = iter(int(g.prod()) // proc.merge_size**2 for g in batch["image_grid_thw"])
    for i, item in enumerate(ITEMS):
        ref = _reference_ids(proc, item, side, [next(per_image) for _ in image_paths(item)], resp)
        row = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        assert row == ref, item.id


def test_rows_over_max_length_are_still_cut(setup) -> None:
    proc, root = setup
    proc = dataclasses.replace(proc, max_length=160)
    long = EncodeItem("t:long", 1, "a red circle " * 200, None)
    batch = encode_items(proc, [ITEMS[0], long], ["candidate"] * 2, [proc.emb_token] * 2, [False] * 2, root)
    assert batch["attention_mask"].sum(1).tolist()[1] == proc.max_length
    assert batch["input_ids"][1, proc.max_length - 1].item() == proc.ids.emb
