"""Training progress: a few log lines with step/total and ETA when not on a terminal; summary line."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from trace_core.training.callbacks import ProgressCallback, eta_text
from trace_core.training.train import summary_text


def test_eta_text() -> None:
    assert eta_text(12.4) == "12s" and eta_text(245) == "4m05s" and eta_text(3720) == "1h02m"


def test_progress_logs_ten_lines_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    cb = ProgressCallback()
    state = SimpleNamespace(global_step=0, max_steps=200)
    caplog.set_level(logging.INFO, logger="trace_core")
    cb.on_train_begin(None, state, None)
    for step in range(1, 201):
        state.global_step = step
        if step == 50:
            cb.on_log(None, state, None, logs={"loss": 1.2345})
        cb.on_step_end(None, state, None)
    cb.on_train_end(None, state, None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train: step")]
    assert len(lines) == 9  # every 20 steps, the last one left to the stage's summary line
    assert lines[0].startswith("train: step 20/200 (10%)") and "ETA" in lines[0]
    assert "loss 1.234" in lines[-1] and "loss" not in lines[1]


def test_summary_text() -> None:
    summary = {
        "steps": 22,
        "wall_time_s": 11.1,
        "final_loss": 2.5,
        "final_loss_gen": 4.0,
        "final_loss_ret": None,
        "val_r5_untrained": 0.3125,
        "val_r5_trained": 0.6875,
        "val_r5_chance": 0.3125,
        "registered_version": "1",
    }
    text = summary_text(summary, 5)
    assert text == (
        "22 steps in 11 s; final loss 2.500 (gen 4.000, ret ?); validation R@5 31.2% -> 68.8% (chance 31.2%); "
        "registered version 1"
    )
