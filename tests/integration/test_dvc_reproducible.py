"""DVC outputs are byte-reproducible: two clean runs in two places write the same dvc.lock.

No mtimes, wall times, absolute paths or other run-specific bytes may end up inside a DVC
output, or every downstream stage looks changed on the next machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _trace_project import make_project, run

pytestmark = pytest.mark.slow

CHEAP = ["download", "validate", "cot_generate", "cot_curate", "cot_build"]


def _lock_hashes(project: Path) -> dict[str, dict[str, str]]:
    """Stage -> {path: md5} of the deps and outs recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        name: {e["path"]: e["md5"] for e in (*stage.get("deps", []), *stage.get("outs", []))}
        for name, stage in lock.items()
    }


def test_two_clean_runs_in_two_places_write_the_same_lock(tmp_path: Path) -> None:
    first = make_project(tmp_path / "first" / "project")
    second = make_project(tmp_path / "elsewhere" / "deeper" / "project")
    for project in (first, second):
        run(["dvc", "repro", *CHEAP], project)
    a, b = _lock_hashes(first), _lock_hashes(second)
    assert list(a) == CHEAP
    diff = {s: {p for p in a[s] if a[s][p] != b[s].get(p)} for s in a}
    assert all(not paths for paths in diff.values()), f"run-specific bytes in: {diff}"
    # nothing to re-run in place either: the outputs did not move under DVC's feet
    assert "up to date" in run(["dvc", "status", *CHEAP], first).stdout
