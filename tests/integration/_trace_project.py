"""A throwaway copy of the project (git + DVC) with shrunken params, for pipeline tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from trace_core.config import set_dotted

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: sizes that keep every stage to seconds on two CPU cores (M-BEIR-mini shrunk further).
SMALL: dict[str, Any] = {
    "download.mini.train_per_task": 12,
    "download.mini.test_per_task": 8,
    "download.mini.pool_per_task": 24,
    "download.mini.val_per_task": 2,
    "download.mini.n_entities": 24,
    "download.mini.image_size": 56,
    "download.zeroshot_mini.queries": 8,
    "download.zeroshot_mini.distractors": 4,
}


set_key = set_dotted  # dotted params key that must already exist


def env() -> dict[str, str]:
    """Environment of subprocesses: the venv first on PATH, telemetry off, few threads."""
    from trace_core.env import TELEMETRY_OFF

    out = {**os.environ, **TELEMETRY_OFF, "OMP_NUM_THREADS": "2", "CI": "true"}
    out["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    out.pop("MLFLOW_TRACKING_URI", None)
    out.pop("MLFLOW_REGISTRY_URI", None)  # a test that called mlflow.set_registry_uri must not leak it
    out.pop("TRACE_PARENT_RUN_ID", None)
    return out


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command in the project copy; raise with its output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def make_project(dest: Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Copy dvc.yaml, params.yaml and trace_core/ into ``dest``, shrink params, ``git init`` + ``dvc init`` + commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, dest / name)
    # the stages' code deps (dvc.yaml lists trace_core modules); the commands run the installed package
    shutil.copytree(ROOT / "trace_core", dest / "trace_core", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**SMALL, **(overrides or {})}.items():
        set_key(raw, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ignored = (ROOT / ".gitignore").read_text() if (ROOT / ".gitignore").exists() else ""
    (dest / ".gitignore").write_text(ignored + "\n/mlruns.db\n/mlartifacts\n/.trace\n__pycache__/\n")
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "ci@example.invalid"], dest)
    run(["git", "config", "user.name", "ci"], dest)
    run([str(BIN / "dvc"), "init", "-q"], dest)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test project"], dest)
    return dest
