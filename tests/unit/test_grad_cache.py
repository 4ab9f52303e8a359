"""Gradient caching (``train.grad_cache_chunk``): chunked training step == one forward over all rows."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import Backbone, build_backbone
from trace_core.model.collate import IGNORE_INDEX, TrainCollator
from trace_core.model.grad_cache import row_chunks
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem, TrainSample

HEAD = HeadConfig(0.5, 1.0, 0.05, True, False, lambda_route=0.3)  # every loss term on
CHAIN = "reasoning about it\n a green square<|emb|>"  # a z=1 target: chain, answer, <|emb|>
# float64 weights: gradients agree to ~1e-15; the losses themselves are float32 (CE casts logits)
TOL64 = {"loss": {"atol": 1e-6, "rtol": 1e-6}, "grad": {"atol": 1e-12, "rtol": 1e-9}}
# float32 weights: summation order differs (embed_tokens sums over every row), so ~1e-5
TOL32 = {"loss": {"atol": 1e-6, "rtol": 1e-6}, "grad": {"atol": 5e-5, "rtol": 1e-4}}


def _item(iid: str, text: str | None, img: str | None) -> EncodeItem:
    return EncodeItem(iid, 7, text, img)


def _samples() -> list[TrainSample]:
    """Queries, positives and negatives mixing text-only rows and three image sizes, so chunk borders cut both."""
    rows = [
        (_item("9:1", "find a green square", None), _item("9:51", None, "g.png"), CHAIN),
        (_item("9:2", "make it wide", "w.png"), _item("9:52", "a wide red box", "w.png"), "<|emb|>"),
        (_item("9:3", None, "big.png"), _item("9:53", "a big blue field", None), CHAIN),
        (_item("9:4", "the same but green", "g.png"), _item("9:54", None, "big.png"), "<|emb|>"),
    ]
    negs = [_item("9:60", "a square", None), _item("9:61", None, "w.png"), (), _item("9:63", "green", "g.png")]
    return [
        TrainSample(q.id, 7, 8, int(target != "<|emb|>"), q, pos, target, negatives=(neg,) if neg else ())
        for (q, pos, target), neg in zip(rows, negs, strict=True)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Backbone, dict[str, Any]]:
    """Micro backbone and a collated batch of 4 queries, 4 positives and 3 hard negatives."""
    root = tmp_path_factory.mktemp("gc")
    Image.new("RGB", (56, 56), (0, 200, 0)).save(root / "g.png")
    Image.new("RGB", (84, 56), (200, 0, 0)).save(root / "w.png")
    Image.new("RGB", (112, 84), (0, 0, 200)).save(root / "big.png")
    texts = ["a green square", "reasoning about it", "a wide red box", "a big blue field"] * 10
    bb = build_backbone(ModelParams(tiny=micro_tiny(300)), texts, 0, torch.float32)
    batch = TrainCollator(bb.proc, root, hard_negatives=1)(_samples())
    return bb, batch


def _step(model: TraceModel, batch: dict[str, Any], chunk: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Losses and every parameter's gradient of one forward/backward with ``grad_cache_chunk = chunk``."""
    model.head = replace(HEAD, grad_cache_chunk=chunk)
    model.zero_grad(set_to_none=True)
    out = model(**dict(batch))
    out.loss.backward()
    losses = {k: out[k].detach() for k in ("loss", "loss_gen", "loss_ret", "loss_route", "accuracy")}
    grads = {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}
    return losses, grads


def _model(bb: Backbone, batch: dict[str, Any], dtype: torch.dtype) -> tuple[TraceModel, dict[str, Any]]:
    """A fresh copy of the micro backbone in ``dtype`` (and the batch's pixels in it)."""
    model = TraceModel(copy.deepcopy(bb.model).to(dtype), bb.proc.ids, HEAD).train()
    return model, {**batch, "pixel_values": batch["pixel_values"].to(dtype)}


def _assert_same_step(model: TraceModel, batch: dict[str, Any], chunk: int, tol: dict[str, dict[str, float]]) -> None:
    ref_losses, ref_grads = _step(model, batch, 0)
    losses, grads = _step(model, batch, chunk)
    for k, v in ref_losses.items():
        torch.testing.assert_close(losses[k], v, **tol["loss"], check_dtype=False, msg=k)
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        if g is None:
            assert grads[name] is None or not grads[name].any(), name
        else:
            assert grads[name] is not None, name
            torch.testing.assert_close(grads[name], g, **tol["grad"], msg=name)


def test_batch_mixes_image_and_text_rows(setup: tuple[Backbone, dict[str, Any]]) -> None:
    bb, batch = setup
    images = (batch["input_ids"] == bb.proc.ids.vision_start).sum(dim=1).tolist()
    assert images == [0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1] and batch["image_grid_thw"].shape[0] == 8
    assert len({tuple(g.tolist()) for g in batch["image_grid_thw"]}) == 3
    assert (batch["labels"][:4] != IGNORE_INDEX).sum(dim=1).tolist()[1] == 1  # z=0 query: only <|emb|>


@pytest.mark.parametrize("chunk", [1, 2, 3, 4])
def test_row_chunks_slice_vision_inputs_consistently(setup: tuple[Backbone, dict[str, Any]], chunk: int) -> None:
    bb, batch = setup
    chunks = row_chunks(batch, chunk, bb.proc.ids.vision_start)
    assert [c["input_ids"].shape[0] for c in chunks][:-1] == [chunk] * (len(chunks) - 1)
    for key in ("pixel_values", "image_grid_thw"):
        torch.testing.assert_close(torch.cat([c[key] for c in chunks if key in c]), batch[key], rtol=0, atol=0)
    start = 0
    for c in chunks:
        rows = c["input_ids"].shape[0]
        n_img = int((c["input_ids"] == bb.proc.ids.vision_start).sum())
        assert n_img == (c["image_grid_thw"].shape[0] if "image_grid_thw" in c else 0)
        if n_img:
            assert c["pixel_values"].shape[0] == int(c["image_grid_thw"].prod(dim=1).sum())
        width = c["input_ids"].shape[1]
        assert int(c["attention_mask"].sum(dim=1).max()) == width  # trailing padding trimmed
        for key in ("input_ids", "labels", "mm_token_type_ids"):
            torch.testing.assert_close(c[key], batch[key][start : start + rows, :width], rtol=0, atol=0)
        assert not batch["attention_mask"][start : start + rows, width:].any()
        start += rows


def test_row_chunks_reject_inconsistent_vision_inputs(setup: tuple[Backbone, dict[str, Any]]) -> None:
    bb, batch = setup
    with pytest.raises(ValueError, match="image grids"):
        row_chunks({**batch, "image_grid_thw": batch["image_grid_thw"][:-1]}, 2, bb.proc.ids.vision_start)
    with pytest.raises(ValueError, match="patches"):
        row_chunks({**batch, "pixel_values": batch["pixel_values"][:-4]}, 2, bb.proc.ids.vision_start)


@pytest.mark.parametrize("chunk", [2, 3])
def test_chunked_step_equals_one_forward(setup: tuple[Backbone, dict[str, Any]], chunk: int) -> None:
    """Losses and every parameter gradient (vision tower, LM, head, temperature) match (float64)."""
    bb, batch = setup
    model, batch = _model(bb, batch, torch.float64)
    _assert_same_step(model, batch, chunk, TOL64)
    _, grads = _step(model, batch, chunk)
    assert grads["logit_scale"] is not None and any(
        g is not None and g.any() for n, g in grads.items() if n.startswith("backbone.model.visual")
    )


def test_chunked_step_without_labelled_tokens(setup: tuple[Backbone, dict[str, Any]]) -> None:
    """No labelled token: L_gen is 0 in both paths (the empty token mean), gradients still match."""
    bb, batch = setup
    model, batch = _model(bb, batch, torch.float64)
    unlabelled = {**batch, "labels": torch.full_like(batch["labels"], IGNORE_INDEX)}
    _assert_same_step(model, unlabelled, 2, TOL64)
    losses, _ = _step(model, unlabelled, 2)
    assert losses["loss_gen"].item() == 0.0 and torch.isfinite(losses["loss"])


def test_chunked_step_float32(setup: tuple[Backbone, dict[str, Any]]) -> None:
    """In the training dtype the two paths agree up to float32 summation order."""
    bb, batch = setup
    model, batch = _model(bb, batch, torch.float32)
    _assert_same_step(model, batch, 3, TOL32)


def test_chunk_of_all_rows_is_the_plain_forward(setup: tuple[Backbone, dict[str, Any]]) -> None:
    bb, batch = setup
    model = TraceModel(bb.model, bb.proc.ids, replace(HEAD, grad_cache_chunk=batch["input_ids"].shape[0]))
    called = []
    model.embed_chunked = lambda *a: called.append(a)  # type: ignore[method-assign]
    model(**dict(batch))
    assert not called


def test_chunks_nest_with_layer_checkpointing(setup: tuple[Backbone, dict[str, Any]]) -> None:
    """``train.gradient_checkpointing`` (non-reentrant, per layer) inside the chunks changes nothing."""
    bb, batch = setup
    model, batch = _model(bb, batch, torch.float64)
    ref_losses, ref_grads = _step(model, batch, 0)
    model.base.activation_checkpointing_enable()  # what the Trainer's default kwargs give (use_reentrant=False)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.base.model.language_model.layers)
    losses, grads = _step(model, batch, 2)
    for k, v in ref_losses.items():
        torch.testing.assert_close(losses[k], v, **TOL64["loss"], msg=k)
    for name, g in ref_grads.items():
        if g is not None:
            torch.testing.assert_close(grads[name], g, **TOL64["grad"], msg=name)


def test_route_loss_is_the_mean_first_token_ce(setup: tuple[Backbone, dict[str, Any]]) -> None:
    """L_route = mean over queries of the CE of their first response token; the total adds it."""
    bb, batch = setup
    model, batch = _model(bb, batch, torch.float64)
    model.head = replace(HEAD, grad_cache_chunk=0)
    with torch.no_grad():
        out = model(**dict(batch))
        hidden, _ = model.hidden_states({k: v for k, v in batch.items() if k not in ("labels", "n_queries")})
        logits = model.logits(hidden).float()
    labels = batch["labels"]
    ces = []
    for row in range(int(batch["n_queries"])):
        pos = int((labels[row] != IGNORE_INDEX).nonzero()[0])  # first labelled token
        ces.append(torch.nn.functional.cross_entropy(logits[row, pos - 1][None], labels[row, pos][None]))
    torch.testing.assert_close(out["loss_route"], torch.stack(ces).mean(), atol=1e-6, rtol=1e-6)
    ret = out["loss_ret"]
    expected = HEAD.lambda_gen * out["loss_gen"] + HEAD.lambda_ret * ret + HEAD.lambda_route * out["loss_route"]
    torch.testing.assert_close(out["loss"].detach(), expected, atol=1e-6, rtol=1e-6, check_dtype=False)
