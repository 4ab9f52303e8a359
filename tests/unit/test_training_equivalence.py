"""Equivalences with tolerances: gathered two-rank step == one-rank step; merged LoRA == unmerged LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import Params, dump_params, parse_params
from trace_core.model.checkpoint import merged_for_saving, read_meta
from trace_core.training.equivalence import gather_equivalence, merge_equivalence, perturb_adapters
from trace_core.types import EncodeItem, TrainSample


def _params(root: Path, **train: object) -> Params:
    raw = dump_params(Params())
    raw["model"].update(
        tiny=micro_tiny(400).model_dump(), lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, freeze_vision=True
    )
    raw["train"].update(deepspeed=False, lambda_gen=1.0, lambda_route=0.5, **train)
    raw["paths"] = {k: str(root / v) for k, v in raw["paths"].items()}
    return parse_params(raw)


def _samples(root: Path) -> list[TrainSample]:
    """Four samples whose chains differ in length, so the ranks hold different numbers of labelled tokens."""
    Image.new("RGB", (56, 56), (200, 30, 30)).save(root / "a.png")
    targets = ["<|emb|>", "a long chain about the red circle\nred<|emb|>", "short\nx<|emb|>", "<|emb|>"]
    out = []
    for i, target in enumerate(targets):
        q = EncodeItem(f"9:{i}", 1, f"find the picture number {i}", "a.png" if i == 1 else None)
        pos = EncodeItem(f"9:{100 + i}", 1, f"a caption {i} of a circle", "a.png" if i == 2 else None)
        out.append(TrainSample(q.id, 1, 9, int(target != "<|emb|>"), q, pos, target))
    return out


@pytest.mark.slow
def test_two_ranks_b_equal_one_rank_2b(tmp_path: Path) -> None:
    """A real two-process gloo group: the objective and the averaged gradients match one process."""
    samples = _samples(tmp_path)
    check = gather_equivalence(_params(tmp_path, grad_cache_chunk=3), samples, tmp_path, world_size=2)
    assert check.grad_max_abs > 1e-3  # the adapters do get gradients
    assert check.loss_abs_diff < 1e-5, check
    assert check.grad_max_abs_diff < 1e-5 * max(1.0, check.grad_max_abs), check
    # control: without gathering each rank sees only its own negatives, and the step differs
    local = gather_equivalence(_params(tmp_path, gather_across_ranks=False), samples, tmp_path, world_size=2)
    assert local.loss_abs_diff > 1e-3


def test_merged_model_embeds_like_the_unmerged_lora_model(tmp_path: Path) -> None:
    from trace_core.training.build import build_model, save_merged

    params = _params(tmp_path)
    samples = _samples(tmp_path)
    model, bb = build_model(params, samples, tmp_path / "tok")
    perturb_adapters(model, seed=3)  # trained-looking LoRA B and <|emb|> rows
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_merged(state, params, bb, tmp_path / "model")
    assert read_meta(tmp_path / "model")["model_class"] == "Qwen2VLForConditionalGeneration"
    items = [s.positive for s in samples] + [s.query for s in samples]
    diff = merge_equivalence(params, state, tmp_path / "model", items, tmp_path)
    assert diff < 1e-5
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    key = next(k for k in saved if k.endswith("layers.0.self_attn.q_proj.weight"))
    base = next(v for k, v in state.items() if k.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    assert (saved[key] - base).abs().max() > 1e-4  # the LoRA delta is in the saved weights
    assert not any("lora" in k or "trainable_tokens" in k for k in saved)


def test_merge_refuses_zero3_partitions() -> None:
    layer = torch.nn.Linear(2, 2)
    layer.weight.ds_id = 7  # type: ignore[attr-defined]  # what a ZeRO-3 partitioned parameter carries
    with pytest.raises(ValueError, match="partitioned"):
        merged_for_saving(layer)
