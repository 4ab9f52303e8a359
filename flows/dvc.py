"""DVC command construction and log streaming for the Prefect flows (no Prefect import).

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

#: the pipeline's phases, each a Prefect flow running these DVC stages in order.
PHASES: dict[str, tuple[str, ...]] = {
    "data": ("download", "validate"),
    "cot": ("cot_generate", "cot_curate", "cot_build"),
    "train": ("train",),
    "index": ("export", "index"),
    "evaluate": ("evaluate",),
}
#: stages whose I/O can fail transiently (hub download, teacher endpoint, Milvus server).
IO_STAGES: frozenset[str] = frozenset({"download", "cot_generate", "index"})
#: DVC metrics file each stage writes (relative to ``paths.metrics_dir``), if any.
STAGE_METRICS: dict[str, str] = {
    "validate": "validation.json",
    "cot_curate": "cot_curate.json",
    "cot_build": "cot_build.json",
    "train": "train.json",
    "evaluate": "mbeir.json",
}

Scalar = str | int | float | bool | None


def format_override(key: str, value: Scalar) -> str:
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


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics JSON as dotted keys."""
    if isinstance(obj, Mapping):
        out: dict[str, float] = {}
        for key, value in obj.items():
            out.update(flatten_metrics(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix: float(obj)}
    return {}


def read_metrics(path: Path) -> dict[str, float]:
    """Flattened numeric metrics of a DVC metrics file ({} if absent)."""
    if not path.is_file():
        return {}
    return flatten_metrics(json.loads(path.read_text()))


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Scalar]) -> dict[str, Any]:
    """Return a copy of a params mapping with dotted ``overrides`` applied (as DVC would)."""
    out = json.loads(json.dumps(raw))
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(format_override(key, value).split("=", 1)[1])
    return dict(out)
