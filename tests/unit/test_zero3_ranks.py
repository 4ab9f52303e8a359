"""ZeRO-3 on several ranks (a batch without images on one rank must not hang the others); safe checkpoint loads."""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.collate import encode_items
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem, TrainSample

TEXTS = ["a red circle left of a blue square", "make the circle green"] * 20


def test_blank_vision_runs_the_tower_and_changes_nothing(tmp_path: Path) -> None:
    bb = build_backbone(ModelParams(tiny=micro_tiny(400)), TEXTS, seed=0, dtype=torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False)).eval()
    item = EncodeItem("9:1", 0, "a red circle", None)
    batch = encode_items(bb.proc, [item], ["candidate"], [bb.proc.emb_token], [False], tmp_path)
    calls: list[int] = []
    model.base.model.visual.register_forward_hook(lambda *a: calls.append(1))
    plain, _ = model.hidden_states(batch)
    assert calls == []  # one process: no blank image
    with model._blank_vision(True):
        out = model.base.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=model.rope_positions(batch),
            mm_token_type_ids=batch["mm_token_type_ids"],
        ).last_hidden_state
    assert calls == [1]
    torch.testing.assert_close(out, plain, atol=0.0, rtol=0.0)


def _samples(root: Path, with_images: bool) -> list[TrainSample]:
    Image.new("RGB", (56, 56), (200, 30, 30)).save(root / "a.png")
    img = "a.png" if with_images else None
    out = []
    for i in range(2):
        q = EncodeItem(f"9:{i}", 1, f"query {i}", img)
        pos = EncodeItem(f"9:{10 + i}", 1, f"candidate {i}", None)
        out.append(TrainSample(q.id, 1, 9, 0, q, pos, "<|emb|>"))
    return out


def _zero3_rank(rank: int, world: int, port: int, root: str) -> None:
    """One ZeRO-3 step where only rank 0's batch has images (rank 1's runs the blank image)."""
    import deepspeed

    from trace_core.config import TrainParams
    from trace_core.model.collate import TrainCollator
    from trace_core.training.deepspeed_config import deepspeed_config

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    os.environ["DS_ACCELERATOR"] = "cpu"
    deepspeed.init_distributed("gloo")
    torch.manual_seed(0)
    bb = build_backbone(ModelParams(tiny=micro_tiny(400)), TEXTS, seed=0, dtype=torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, True, grad_cache_chunk=2))
    cfg = deepspeed_config(TrainParams(per_device_batch_size=2, zero_stage=3), cuda=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    batch = TrainCollator(bb.proc, Path(root), 0)(_samples(Path(root), with_images=rank == 0))
    out = engine(**batch)
    engine.backward(out.loss)
    engine.step()
    (Path(root) / f"done{rank}").write_text(f"{float(out.loss)}")


@pytest.mark.slow
def test_zero3_ranks_with_and_without_images_step_together(tmp_path: Path) -> None:
    from torch.multiprocessing.spawn import spawn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = spawn(_zero3_rank, args=(2, port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("ZeRO-3 ranks hung: one rank ran the vision tower, the other did not")
    losses = [float((tmp_path / f"done{r}").read_text()) for r in range(2)]
    assert all(math.isfinite(x) for x in losses)


class _Payload:  # an arbitrary class: the safe unpickler must refuse it
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("arbitrary code ran",))


def test_deepspeed_checkpoints_load_weights_only(tmp_path: Path) -> None:
    """DeepSpeed's own classes load under the safe unpickler; anything else is refused."""
    import pickle

    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from trace_core.training.trainer import weights_only_deepspeed_load

    good, bad = tmp_path / "optim_states.pt", tmp_path / "evil.pt"
    torch.save({"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(1.0), "w": torch.ones(2)}, good)
    torch.save({"x": _Payload()}, bad)
    engine = TorchCheckpointEngine()
    with weights_only_deepspeed_load():
        state = engine.load(str(good))
        assert state["zero_stage"] == ZeroStageEnum.weights and torch.equal(state["w"], torch.ones(2))
        with pytest.raises(pickle.UnpicklingError):
            engine.load(str(bad))
    before = TorchCheckpointEngine.load
    with weights_only_deepspeed_load():
        assert TorchCheckpointEngine.load is not before
    assert TorchCheckpointEngine.load is before  # restored after the block
