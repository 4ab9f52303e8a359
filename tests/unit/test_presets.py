"""Presets are complete params files: same keys as params.yaml, valid, full-scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trace_core.config import load_params

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _keys(raw: object, prefix: str = "") -> set[str]:
    if not isinstance(raw, dict) or not raw:
        return {prefix}
    out: set[str] = set()
    for k, v in raw.items():
        out |= _keys(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def test_there_is_a_full_preset() -> None:
    assert any(p.stem == "full-qwen2.5-vl-7b" for p in PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_complete_and_valid(path: Path) -> None:
    params = load_params(path)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = yaml.safe_load(path.read_text())
    assert _keys(preset) == _keys(base), "preset keys drifted from params.yaml: run scripts/build_presets.py"
    assert params.base.profile == "full" and params.download.profile == "full"
    assert params.model.family != "tiny"


def test_full_preset_is_the_papers_recipe() -> None:
    """The paper's training recipe (../shared/docs/TRACE.md), value by value."""
    p = load_params(ROOT / "presets" / "full-qwen2.5-vl-7b.yaml")
    m, t = p.model, p.train
    assert m.family == "qwen2.5-vl-7b"
    assert (m.lora, m.lora_r, m.lora_alpha) == (True, 128, 256)
    assert set(m.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert m.freeze_vision and m.train_merger
    assert m.max_pixels == 300 * 28 * 28 and m.max_length == 1024
    assert (t.lambda_gen, t.lambda_ret) == (1.0, 1.0)
    assert t.temperature == 0.05 and not t.learnable_temperature
    assert t.learning_rate == 2e-4 and t.lr_scheduler == "cosine" and t.epochs == 1.0
    assert t.per_device_batch_size * 16 == 1024  # 16 GPUs in the paper: global batch 1024
    assert t.bf16 and t.gradient_checkpointing and t.deepspeed and t.zero_stage == 3
