"""Pure training parts: DeepSpeed config, task-balanced sampler, validation split, collation, loss step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams, TrainParams
from trace_core.model.backbone import build_backbone
from trace_core.model.collate import IGNORE_INDEX, TrainCollator
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.training.callbacks import hit_at_k
from trace_core.training.data import split_validation
from trace_core.training.deepspeed_config import deepspeed_config
from trace_core.training.sampler import TaskBalancedSampler
from trace_core.types import EncodeItem, TrainSample


@pytest.mark.parametrize("stage,offload", [(3, False), (3, True), (2, False)])
def test_deepspeed_config_validates(stage: int, offload: bool) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig

    tp = TrainParams(zero_stage=stage, offload=offload, per_device_batch_size=4, bf16=True)
    cfg = DeepSpeedConfig(deepspeed_config(tp))
    assert cfg.zero_optimization_stage == stage
    assert cfg.train_micro_batch_size_per_gpu == 4 and cfg.bfloat16_config.enabled
    assert (cfg.zero_config.offload_optimizer is not None) == offload


def test_cpu_offload_uses_torch_adamw() -> None:
    """DeepSpeed's CPU Adam compiles at first use (minutes per rank): on CPUs the config asks for torch's."""
    tp = TrainParams(zero_stage=3, offload=True)
    assert deepspeed_config(tp, cuda=False)["optimizer"]["params"]["torch_adam"] is True
    assert "torch_adam" not in deepspeed_config(tp, cuda=True)["optimizer"]["params"]
    assert "optimizer" not in deepspeed_config(TrainParams(zero_stage=3), cuda=False)  # the Trainer's torch AdamW


def test_sampler_is_stratified_and_deterministic() -> None:
    tasks = [0] * 40 + [3] * 20 + [7] * 20
    s = TaskBalancedSampler(tasks, seed=1)
    order = list(s)
    assert sorted(order) == list(range(len(tasks))) and len(s) == len(tasks)
    for b in range(0, len(order), 8):  # every batch of 8 holds the 2:1:1 mix, +-1
        counts = [sum(tasks[i] == t for i in order[b : b + 8]) for t in (0, 3, 7)]
        assert abs(counts[0] - 4) <= 1 and all(abs(c - 2) <= 1 for c in counts[1:])
    assert list(s) == order
    s.set_epoch(1)
    assert list(s) != order


def _sample(i: int, task: int, pos: str, target: str = "<|emb|>") -> TrainSample:
    q = EncodeItem(f"9:{i}", task, f"query {i}", None)
    return TrainSample(q.id, task, 9, 0, q, EncodeItem(pos, task, f"cand {pos}", None), target)


def test_split_validation_stratified_and_deterministic() -> None:
    samples = [_sample(i + 1, t, f"9:{100 + i % 7}") for i, t in enumerate([0, 1, 3] * 10)]
    train, val = split_validation(samples, 6, seed=0)
    assert [sum(s.task_id == t for s in val) for t in (0, 1, 3)] == [2, 2, 2]
    assert not {s.qid for s in val} & {s.qid for s in train} and len(train) == 24
    assert split_validation(samples, 6, seed=0)[1] == val


def test_hit_at_k_on_constructed_vectors() -> None:
    c = torch.eye(4).numpy()
    q = c[[0, 1, 2]]
    assert hit_at_k(q, c, [0, 1, 2], k=1) == 1.0
    assert hit_at_k(q, c, [1, 2, 3], k=1) == 0.0


def test_collator_labels_and_loss_step(tmp_path: Path) -> None:
    Image.new("RGB", (56, 56), (0, 200, 0)).save(tmp_path / "g.png")
    micro = micro_tiny(300)
    bb = build_backbone(ModelParams(tiny=micro), ["a green square", "reasoning about it"] * 10, 0, torch.float32)
    samples = [
        _sample(1, 0, "9:50", "reasoning about it\n a green square<|emb|>"),
        TrainSample(
            "9:2",
            7,
            8,
            0,
            EncodeItem("9:2", 7, "make it green", "g.png"),
            EncodeItem("9:51", 7, None, "g.png"),
            "<|emb|>",
            negatives=(EncodeItem("9:52", 7, "a square", None),),
        ),
    ]
    batch = TrainCollator(bb.proc, tmp_path, hard_negatives=1)(samples)
    assert batch["n_queries"] == 2 and batch["input_ids"].shape[0] == 5
    labelled = batch["labels"] != IGNORE_INDEX
    assert labelled[2:].sum() == 0  # candidates never get generation labels
    emb = bb.proc.ids.emb
    for r in range(2):
        lab = batch["labels"][r][labelled[r]]
        assert lab[-1] == emb and (lab == emb).sum() == 1
        assert batch["input_ids"][r, batch["pool_index"][r] + 1] == emb
    assert labelled[1].sum() == 1 and labelled[0].sum() > 3
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(0.5, 1.0, 0.05, True, False))
    out = model(**dict(batch))
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(0.5 * out.loss_gen.item() + out.loss_ret.item(), rel=1e-5)
    out.loss.backward()
    assert model.logit_scale.grad is not None
