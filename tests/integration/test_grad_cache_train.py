"""Gradient caching through the real trainer on DeepSpeed ZeRO-3 (CPU accelerator, one gloo process).

Two 2-step runs from the same seed, one forward vs ``train.grad_cache_chunk = 5`` (16 rows ->
chunks of 5, 5, 5, 1): the per-step losses, the first step's gradient norm and the trained
weights must agree. ZeRO-3 is forced to partition every parameter (persistence threshold 0),
so each chunk's forward, recompute and backward gather and release the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from micro import SMALL_MINI, micro_train_params

from trace_core.config import Params
from trace_core.data.mini import write_mini
from trace_core.paths import Paths

SMALL = SMALL_MINI


def _params(root: Path, chunk: int) -> Params:
    return micro_train_params(
        root, tracking=False, deepspeed=True, max_steps=2, eval_steps=0, save_steps=1000, grad_cache_chunk=chunk
    )


def _partition_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ZeRO-3 partition the micro model's (small) parameters too."""
    from trace_core.training import deepspeed_config as dsc

    plain = dsc.deepspeed_config

    def config(tp: Any, cuda: bool = True) -> dict[str, Any]:
        cfg = plain(tp, cuda)
        cfg["zero_optimization"].update({"stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 0})
        return cfg

    monkeypatch.setattr(dsc, "deepspeed_config", config)


def _train(params: Params) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    """Per-step losses, per-step gradient norms and the consolidated trained weights."""
    from trace_core.training.build import deepspeed_scope

    with deepspeed_scope():  # as the train stage: the global ZeRO-3 config ends with the run
        return _train_in_scope(params)


def _train_in_scope(params: Params) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    from trace_core.training.build import build_trainer, full_state_dict
    from trace_core.training.train import checkpoint_dir, load_samples

    paths = Paths.from_params(params)
    samples, _ = load_samples(params, paths)
    parts = build_trainer(params, paths, samples, checkpoint_dir(paths), cuda=False)
    losses: list[float] = []
    plain = parts.trainer.compute_loss

    def recorded(*args: Any, **kwargs: Any) -> Any:
        loss = plain(*args, **kwargs)
        losses.append(float(loss.detach()))
        return loss

    parts.trainer.compute_loss = recorded
    parts.trainer.train()
    norms = [float(h["grad_norm"]) for h in parts.trainer.state.log_history if "grad_norm" in h]
    state = {k: v.detach().clone().float() for k, v in full_state_dict(parts.trainer).items()}
    return losses, norms, state


@pytest.mark.slow
def test_zero3_grad_cache_steps_equal_one_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for var, value in {**env, "DS_ACCELERATOR": "cpu"}.items():
        monkeypatch.setenv(var, value)  # a single-process gloo group, as the train stage sets up
    _partition_everything(monkeypatch)
    data = tmp_path / "data" / "mbeir"
    write_mini(SMALL, Params().base.seed, data)
    runs = {}
    for chunk in (0, 5):
        root = tmp_path / f"chunk{chunk}"
        (root / "data").mkdir(parents=True)
        (root / "data" / "mbeir").symlink_to(data, target_is_directory=True)
        runs[chunk] = _train(_params(root, chunk))
    (ref_losses, ref_norms, ref_state), (losses, norms, state) = runs[0], runs[5]
    assert len(ref_losses) == len(losses) == 2 and len(ref_norms) == len(norms) == 2
    assert ref_state.keys() == state.keys()
    torch.testing.assert_close(losses, ref_losses, atol=1e-5, rtol=1e-5)  # step 2 checks step 1's update
    torch.testing.assert_close(norms, ref_norms, atol=1e-5, rtol=1e-4)
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], atol=1e-5, rtol=1e-4, msg=k)
