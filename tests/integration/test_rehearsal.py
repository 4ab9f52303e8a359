"""``make rehearsal``'s driver end to end (in a temp folder): the report says every check passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _trace_project import ROOT, env

REHEARSAL_ROOT = ".trace/rehearsal"


def rehearsal_params(root: Path) -> Path:
    """``presets/rehearsal.yaml`` with its folder moved under ``root`` (nothing else changed)."""
    raw = yaml.safe_load((ROOT / "presets" / "rehearsal.yaml").read_text())

    def moved(path: str) -> str:
        return str(root / Path(path).relative_to(REHEARSAL_ROOT))

    raw["paths"] = {k: moved(v) for k, v in raw["paths"].items()}
    raw["model"]["name_or_path"] = moved(raw["model"]["name_or_path"])
    raw["download"]["from_dir"] = moved(raw["download"]["from_dir"])
    raw["tracking"]["tracking_uri"] = f"sqlite:///{root / 'mlruns.db'}"
    raw["tracking"]["artifact_location"] = str(root / "mlartifacts")
    out = root.parent / "rehearsal.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


@pytest.mark.slow
def test_rehearsal_report(tmp_path: Path) -> None:
    params, report_file = rehearsal_params(tmp_path / "rehearsal"), tmp_path / "rehearsal.json"
    cmd = [sys.executable, "scripts/rehearsal.py", "-p", str(params), "--out", str(report_file)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-6000:]
    report = json.loads(report_file.read_text())
    assert report["failures"] == []
    assert report["model_class"] == "Qwen2_5_VLForConditionalGeneration"
    assert report["lora"] is True and report["zero_stage"] == 3 and report["world_size"] == 2
    assert report["bf16"] and report["gradient_checkpointing"] and report["grad_cache_chunk"] > 0
    assert report["resume_loss_max_abs_diff"] <= 1e-3
    assert report["resumed_from_step"] in (2, 4) and report["untrained_baseline_kept"]
    assert report["curve_steps"] == list(range(report["steps"] + 1))
    assert report["merge_embedding_max_abs_diff"] <= 2e-2
    assert report["gather_loss_abs_diff"] <= 1e-4
    assert report["export_world_size"] == 2 and report["export_equal_single_rank"] is True
    assert (tmp_path / "rehearsal" / "metrics" / "mbeir.json").is_file()  # export, index, evaluate ran
