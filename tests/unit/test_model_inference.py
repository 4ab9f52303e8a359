"""Routed query encoding == full / teacher-forced forwards of the same sequences."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.collate import encode_items
from trace_core.model.inference import TraceEncoder, routed_encode
from trace_core.model.pooling import pool_at
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem

TEXTS = ["a red circle left of a blue square", "make the circle green", "the entity Zorbia is a city"] * 20
MICRO = micro_tiny(400, num_layers=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[TraceModel, object, Path]:
    root = tmp_path_factory.mktemp("img")
    Image.new("RGB", (112, 112), (200, 30, 30)).save(root / "a.png")
    Image.new("RGB", (84, 140), (30, 30, 200)).save(root / "b.png")
    mp = ModelParams(tiny=MICRO)
    bb = build_backbone(mp, TEXTS, seed=0, dtype=torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False)).eval()
    return model, bb.proc, root


ITEMS = [
    EncodeItem("9:1", 0, "Find the image: a red circle left of a blue square.", None),
    EncodeItem("8:2", 7, "Make the circle green.", "a.png"),
    EncodeItem("4:3", 4, None, "b.png"),
    EncodeItem("5:4", 6, "What city is this entity?", "a.png"),
]


def teacher_forced(model: TraceModel, proc, item: EncodeItem, gen: list[int], root: Path) -> torch.Tensor:
    """Pooled state of one full forward over prompt + generated ids + <|emb|>."""
    batch = encode_items(proc, [item], ["query"], [None], [False], root)
    extra = torch.tensor([[*gen, model.ids.emb]])
    batch["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
    return pool_at(hidden, torch.tensor([batch["input_ids"].shape[1] - 2]))[0]


def test_candidate_pool_index_is_last_prompt_state(setup) -> None:
    model, proc, root = setup
    batch = encode_items(proc, ITEMS, ["candidate"] * 4, [proc.emb_token] * 4, [False] * 4, root)
    lengths = batch["attention_mask"].sum(1)
    assert batch["pool_index"].tolist() == (lengths - 2).tolist()
    assert (batch["input_ids"][torch.arange(4), lengths - 1] == model.ids.emb).all()


def test_never_mode_equals_full_forward_batched(setup) -> None:
    model, proc, root = setup
    batch = encode_items(proc, ITEMS, ["query"] * 4, [None] * 4, [False] * 4, root, "left")
    res = routed_encode(model, batch, "never", 8)
    assert res.routes == ["direct"] * 4
    for i, item in enumerate(ITEMS):
        ref = teacher_forced(model, proc, item, [], root)
        torch.testing.assert_close(res.vectors[i], ref, atol=1e-5, rtol=1e-4)


def test_always_mode_decode_equals_teacher_forced(setup) -> None:
    model, proc, root = setup
    batch = encode_items(proc, ITEMS, ["query"] * 4, [None] * 4, [False] * 4, root, "left")
    res = routed_encode(model, batch, "always", 5)
    assert all(r in ("reasoned", "forced") for r in res.routes)
    assert all(1 <= len(g) <= 5 for g in res.generated)
    assert all(g[0] != model.ids.emb for g in res.generated)
    for i, item in enumerate(ITEMS):
        ref = teacher_forced(model, proc, item, res.generated[i], root)
        torch.testing.assert_close(res.vectors[i], ref, atol=1e-5, rtol=1e-4)


@contextmanager
def emb_head_favouring(model: TraceModel, proc, root: Path) -> Iterator[dict]:
    """Make <|emb|> the argmax for ITEMS[0]-like prompts only (lm_head rewritten, then restored)."""
    batch = encode_items(proc, ITEMS, ["query"] * 4, [None] * 4, [False] * 4, root, "left")
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
        h0, h1 = hidden[0, -1], hidden[1, -1]
        saved = model.base.lm_head.weight.clone()
        model.base.lm_head.weight.zero_()
        model.base.lm_head.weight[model.ids.emb] = 10 * (h0 - h1)
    try:
        yield batch
    finally:
        with torch.no_grad():
            model.base.lm_head.weight.copy_(saved)


def test_adaptive_mixed_batch(setup) -> None:
    """Direct rows leave after prefill, the others decode."""
    model, proc, root = setup
    with emb_head_favouring(model, proc, root) as batch:
        res = routed_encode(model, batch, "adaptive", 4)
        assert res.routes[0] == "direct" and res.generated[0] == []
        assert res.routes[1] in ("reasoned", "forced") and res.generated[1]
        for i, item in enumerate(ITEMS):
            ref = teacher_forced(model, proc, item, res.generated[i], root)
            torch.testing.assert_close(res.vectors[i], ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["adaptive", "never", "always"])
def test_pooled_decoding_equals_per_batch_routing(setup, mode) -> None:
    """TraceEncoder decodes reasoning rows pooled across batches: same vectors, routes, chains."""
    model, proc, root = setup
    items = [*ITEMS, *reversed(ITEMS), ITEMS[1]]  # 9 rows, batches of 4: reasoning rows spread out
    with emb_head_favouring(model, proc, root):
        enc = TraceEncoder(model, proc, "test").encode_queries(items, root, mode, 6, 4)
        ref_vecs, ref_routes, ref_gen = [], [], []
        for s in range(0, len(items), 4):
            chunk = items[s : s + 4]
            batch = encode_items(
                proc, chunk, ["query"] * len(chunk), [None] * len(chunk), [False] * len(chunk), root, "left"
            )
            res = routed_encode(model, batch, mode, 6)
            ref_vecs.append(res.vectors)
            ref_routes += res.routes
            ref_gen += res.generated
    assert enc.routes == ref_routes
    assert enc.new_tokens == [len(g) for g in ref_gen]
    if mode == "adaptive":
        assert {"direct"} < set(enc.routes)  # both kinds present
    torch.testing.assert_close(torch.from_numpy(enc.vectors), torch.cat(ref_vecs), atol=1e-5, rtol=1e-4)


def test_zero_cap_forces_at_prefill(setup) -> None:
    model, proc, root = setup
    batch = encode_items(proc, ITEMS, ["query"] * 4, [None] * 4, [False] * 4, root, "left")
    res = routed_encode(model, batch, "always", 0)
    never = routed_encode(model, batch, "never", 0)
    assert res.routes == ["forced"] * 4
    torch.testing.assert_close(res.vectors, never.vectors)
