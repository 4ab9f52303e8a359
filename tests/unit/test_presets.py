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
