"""CLI smoke tests: help answers fast and importing the CLI pulls in no heavy library."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "great_expectations", "mlflow", "deepspeed", "peft", "pymilvus", "prefect")


def test_help_answers_fast() -> None:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "trace_core", "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    for command in ("download", "validate", "train", "evaluate"):
        assert command in out.stdout
    assert elapsed < 15  # generous on a loaded 2-core machine; heavy imports alone take longer


def test_cli_import_is_light() -> None:
    code = f"import sys, trace_core.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_params_key_exits_nonzero_naming_key(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("validate:\n  image_check_fractio: 0.5\n")
    out = subprocess.run(
        [sys.executable, "-m", "trace_core", "validate", "--params", str(bad), "--data-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown key 'validate.image_check_fractio'" in out.stderr and str(bad) in out.stderr
