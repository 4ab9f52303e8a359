"""DVC command construction and log streaming for the Prefect flows (no Prefect import).

The stages and phases come from the registry, :mod:`trace_core.stages`.

DVC decides what is stale and is the only cache: a phase is ``dvc repro <stages>``, or
``dvc exp run -S key=value ... <stages>`` when the flow was given parameter overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trace_core.env import TELEMETRY_OFF
from trace_core.flatten import numeric_leaves

Scalar = str | int | float | bool | None


def format_override(key: str, value: Any) -> str:
    """Render one ``-S`` assignment; values are YAML scalars exactly as DVC parses them."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"{key}={text}"


def dvc_command(stages: Sequence[str], overrides: Mapping[str, Scalar], force: bool = False) -> list[str]:
    """The DVC command of one phase: ``repro`` or, with overrides, ``exp run -S``."""
    cmd = [dvc_executable()]
    if overrides:
        cmd += ["exp", "run"]
        for key, value in sorted(overrides.items()):
            cmd += ["-S", format_override(key, value)]
    else:
        cmd += ["repro"]
    if force:  # only the named stages; their upstream ran in the flow's earlier tasks
        cmd += ["--force", "--single-item"]
    return [*cmd, *stages]


def dvc_executable() -> str:
    """``dvc`` next to the running interpreter (the project venv), else from PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


def stage_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a DVC subprocess: venv first on PATH, telemetry off, extras."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)
    env.update(extra or {})
    return env


def stream(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], emit: Callable[[str], None]) -> int:
    """Run ``cmd`` and pass each output line (stdout and stderr merged) to ``emit``."""
    emit("$ " + " ".join(cmd))
    with subprocess.Popen(
        list(cmd), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                emit(line)
        return proc.wait()


def read_metrics(path: Path) -> dict[str, float]:
    """Flattened numeric metrics of a DVC metrics file ({} if absent)."""
    if not path.is_file():
        return {}
    return numeric_leaves(json.loads(path.read_text()))


def dvc_value(key: str, value: Scalar) -> Any:
    """``value`` as DVC parses ``-S key=value`` (a YAML scalar)."""
    return yaml.safe_load(format_override(key, value).split("=", 1)[1])
