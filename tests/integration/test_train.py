"""Training on a tiny generated M-BEIR-mini: the stage end to end (MLflow included) and exact resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from micro import SMALL_MINI, micro_tiny, micro_train_params

from trace_core.config import Params
from trace_core.data.mini import write_mini
from trace_core.paths import Paths

MICRO = micro_tiny(600)
SMALL = SMALL_MINI
make_params = micro_train_params


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proj")
    p = make_params(root)
    write_mini(SMALL, p.base.seed, Paths.from_params(p).data_root)
    return root


@pytest.mark.slow
def test_train_stage_end_to_end(mini_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from trace_core.model.inference import load_encoder
    from trace_core.training import train as stage

    monkeypatch.chdir(mini_root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TRACE_PARENT_RUN_ID", raising=False)
    from trace_core import tracking
    from trace_core.stages import STAGES

    params = make_params(mini_root)
    paths = Paths.from_params(params)
    with tracking.stage_run(params, "train", STAGES["train"].params):  # as the CLI opens it
        summary = stage.run(params, paths)
    metrics = json.loads(paths.metrics_file("train").read_text())
    assert metrics["steps"] == 4 and metrics["final_loss_gen"] is not None
    assert [s for s, _ in metrics["val_history"]] == [0, 2, 4]
    assert 0.0 < metrics["val_r5_chance"] <= 1.0
    curve = (paths.reports_dir / "train" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss,loss_gen,loss_ret") and len(curve) == 1 + 5  # steps 0..4
    meta = json.loads((paths.model_dir / "trace_meta.json").read_text())
    assert meta["params"]["train"]["max_steps"] == 4 and meta["family"] == "tiny"
    enc = load_encoder(paths.model_dir)
    from trace_core.types import EncodeItem

    item = EncodeItem("9:1", 0, "a red circle", None)
    v = enc.encode_candidates([item], paths.data_root, batch_size=2)
    qe = enc.encode_queries([item], paths.data_root, "adaptive", 4, batch_size=2)
    assert v.shape == (1, enc.dim) and qe.vectors.shape == (1, enc.dim)
    assert abs(float((v**2).sum()) - 1.0) < 1e-4 and qe.routes[0] in ("direct", "reasoned", "forced")
    assert summary["registered_version"] == "1"
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    version = client.get_model_version(params.tracking.registered_model, "1")
    history = client.get_metric_history(version.run_id, "loss_ret")
    assert len(history) == 4
    assert client.get_metric_history(version.run_id, "val_r5")


def _train(params: Params, stop_at: int | None, resume: str | None) -> Any:
    from transformers import TrainerCallback

    from trace_core.training.build import build_trainer
    from trace_core.training.train import checkpoint_dir, load_samples

    paths = Paths.from_params(params)
    samples, _ = load_samples(params, paths)
    parts = build_trainer(params, paths, samples, checkpoint_dir(paths), cuda=False)

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            if stop_at is not None and state.global_step == stop_at:
                control.should_training_stop = True

    parts.trainer.add_callback(Stop())
    parts.trainer.train(resume_from_checkpoint=resume)
    return parts


def _weights(parts: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in parts.model.state_dict().items()}


def test_exact_resume_after_interruption(mini_root: Path, tmp_path: Path) -> None:
    """Stop after checkpoint-2, resume: weights, losses, curve rows and validation history equal a straight run's."""
    from trace_core.training.train import checkpoint_dir

    data = Paths.from_params(make_params(mini_root)).data_root
    for sub in ("a", "b"):
        (tmp_path / sub / "data").mkdir(parents=True)
        (tmp_path / sub / "data" / "mbeir").symlink_to(data, target_is_directory=True)
    fast_val = {"eval_steps": 2, "val_queries": 4, "val_max_new_tokens": 1}
    straight = _train(make_params(tmp_path / "a", **fast_val), None, None)
    other = make_params(tmp_path / "b", **fast_val)
    _train(other, stop_at=2, resume=None)
    root = checkpoint_dir(Paths.from_params(other))
    ckpt = sorted(root.glob("checkpoint-*"))
    assert [c.name for c in ckpt] == ["checkpoint-2"] and not (root / ".staging").exists()
    assert (ckpt[0] / "trace_callbacks.json").is_file()
    resumed = _train(other, None, str(ckpt[-1]))
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    rows_a, rows_b = straight.metrics_cb.history, resumed.metrics_cb.history
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == [1.0, 2.0, 3.0, 4.0]  # curve survives
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) < 1e-4
    assert [s for s, _ in resumed.val_cb.history] == [0, 2, 4]  # untrained baseline kept, not re-measured
    assert resumed.val_cb.history[:2] == straight.val_cb.history[:2]
    # killed after the final checkpoint: resuming from it takes no further step
    again = _train(other, None, str(root / "checkpoint-4"))
    assert again.trainer.state.global_step == 4 and len(again.metrics_cb.history) == 4
    for k, v in _weights(again).items():
        torch.testing.assert_close(v, b[k], atol=0.0, rtol=0.0, msg=k)


def _complete(ckpt: Path) -> Path:
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    return ckpt


def test_checkpoints_of_other_params_are_cleared(tmp_path: Path) -> None:
    from trace_core.training.train import prepare_checkpoints

    root = tmp_path / "ckpt"
    assert prepare_checkpoints(root, "k1") is None
    _complete(root / "checkpoint-2")
    _complete(root / "checkpoint-10")
    assert prepare_checkpoints(root, "k1") == str(root / "checkpoint-10")
    assert prepare_checkpoints(root, "k2") is None
    assert not (root / "checkpoint-10").exists()


def test_incomplete_checkpoints_are_removed_not_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An empty checkpoint-N (kill -9 mid-save before the staging rename) and a staging folder."""
    from trace_core.training.train import prepare_checkpoints

    root = tmp_path / "ckpt"
    prepare_checkpoints(root, "k")
    _complete(root / "checkpoint-2")
    (root / "checkpoint-4").mkdir()  # empty: what a kill at the save moment used to leave
    (root / "checkpoint-6").mkdir()
    (root / "checkpoint-6" / "rng_state.pth").write_bytes(b"partial")
    (root / ".staging" / "checkpoint-8").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        assert prepare_checkpoints(root, "k") == str(root / "checkpoint-2")
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-2", "run_key.txt"]
    assert "checkpoint-4 is incomplete" in caplog.text and "interrupted checkpoint save" in caplog.text


def test_other_ranks_choose_the_same_checkpoint_without_deleting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trace_core.training.train import prepare_checkpoints

    root = tmp_path / "ckpt"
    prepare_checkpoints(root, "k")
    _complete(root / "checkpoint-2")
    (root / "checkpoint-4").mkdir()
    monkeypatch.setenv("RANK", "1")
    assert prepare_checkpoints(root, "k") == str(root / "checkpoint-2")
    assert (root / "checkpoint-4").exists()  # rank 0 deletes


@pytest.mark.slow
def test_zero3_cpu_stage_trains_and_saves(mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeed ZeRO-3 on the CPU accelerator (gloo, one process) through the same stage code."""
    from trace_core.model.inference import load_encoder
    from trace_core.training import train as stage

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mbeir").symlink_to(Paths.from_params(make_params(mini_root)).data_root)
    params = make_params(tmp_path, tracking=False, deepspeed=True, max_steps=3, eval_steps=3, save_steps=2)
    paths = Paths.from_params(params)
    summary = stage.run(params, paths)
    assert summary["steps"] == 3 and summary["final_loss"] is not None
    assert (stage.checkpoint_dir(paths) / "checkpoint-2").is_dir()
    from transformers.integrations import is_deepspeed_zero3_enabled

    assert not is_deepspeed_zero3_enabled()  # the global ZeRO-3 config ends with the stage
    assert "LOCAL_RANK" not in os.environ  # the stage's launch variables are restored too
    enc = load_encoder(paths.model_dir)
    assert enc.dim == MICRO.hidden_size
