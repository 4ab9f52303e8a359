"""bench/bench_export.py: its timing block on a micro model (the JSON fields, identical vectors for every W)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.inference import TraceEncoder
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_export():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "bench" / "bench_export.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_export"] = module
    spec.loader.exec_module(module)
    return module


def test_measure_times_every_worker_count_on_the_same_vectors(bench_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(4):
        Image.new("RGB", (56, 56 + 28 * (i % 2)), (50 * i, 20, 90)).save(tmp_path / f"{i}.png")
    bb = build_backbone(ModelParams(tiny=micro_tiny(400)), ["a red circle", "a blue square"], 0, torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False))
    encoder = TraceEncoder(model, bb.proc, "micro")
    items = [EncodeItem(f"9:{i}", 0, "a red circle" if i % 2 else None, f"{i % 4}.png") for i in range(10)]
    args = argparse.Namespace(batch_size=4, workers=[0, 1], repeats=1)
    out = bench_export.measure(encoder, items, tmp_path, args, 8)
    assert out["rows"] == 10 and out["model_id"] == "micro"
    assert out["parameters"] == sum(p.numel() for p in model.parameters())
    assert set(out["export"]) == {"0", "1"}
    assert out["same_vectors"] is True
    best = out["export"][str(out["best_workers"])]["ratio_vs_forward"]
    assert out["ratio_vs_forward"] == best == max(v["ratio_vs_forward"] for v in out["export"].values())
    assert all(v["rows_s"] > 0 and len(v["seconds"]) == 1 for v in out["export"].values())
