"""Rewrite the code deps (``trace_core/...`` entries) of every stage in dvc.yaml from the stage registry.

Usage: ``python scripts/sync_dvc_code_deps.py`` after changing ``code`` in trace_core/stages.py;
tests/integration/test_dvc_yaml.py checks the result (and that the registry covers what each
stage imports). Only the ``trace_core`` lines of each ``deps:`` list are touched; comments,
data deps and everything else stay as written.
"""

from __future__ import annotations

from pathlib import Path

from trace_core.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


def sync(text: str) -> str:
    """dvc.yaml text with each stage's code deps replaced by the registry's."""
    out: list[str] = []
    stage = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("    ") and stripped.rstrip(":") in STAGES:
            stage = STAGES[stripped.rstrip(":")]
        if stage is not None and stripped.startswith("- trace_core"):
            continue  # dropped; re-added after "deps:"
        out.append(line)
        if stage is not None and stripped == "deps:":
            out += [f"      - {dep}" for dep in stage.code]
    return "\n".join(out) + "\n"


def main() -> int:
    """Rewrite dvc.yaml in place."""
    path = ROOT / "dvc.yaml"
    path.write_text(sync(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
