"""Two ranks under ``torch.distributed.run`` (gloo, CPU) export exactly what one process exports.

A micro model (random weights, saved like the train stage saves) exports the tiny M-BEIR-mini
(16 tasks) once in one process and once on two ranks, through ``scripts/export_equivalence.py``,
the script the rehearsal calls. Shards of 8 rows spread every pool over both ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from export_doubles import save_micro_model
from micro import micro_tiny

from trace_core.config import dump_params, parse_params
from trace_core.data.mbeir import load_queries, present_test_tasks, query_file

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_export_equals_one_rank(tmp_path: Path, mini_params, mini_root: Path) -> None:
    raw = dump_params(mini_params)
    raw["model"]["tiny"] = micro_tiny(600).model_dump()
    raw["paths"]["model_dir"] = str(tmp_path / "model")
    raw["export"].update({"max_new_tokens": 4, "shard_size": 8, "batch_size": 4, "device": "cpu"})
    raw["tracking"]["enabled"] = False
    params = parse_params(raw, "<test>")
    texts = [
        q.query_txt or ""
        for t in present_test_tasks(mini_root)
        for q in load_queries(query_file(mini_root, "test", t.stem))
    ]
    save_micro_model(tmp_path / "model", params, texts)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    out, work = tmp_path / "equivalence.json", tmp_path / "work"
    cmd = [sys.executable, str(REPO / "scripts/export_equivalence.py"), "--params", str(params_file)]
    cmd += ["--nproc", "2", "--out", str(out), "--workdir", str(work)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + (work / "ranks2/export.log").read_text()[-3000:]

    result = json.loads(out.read_text())
    n_tasks = len(present_test_tasks(mini_root))
    assert result["export_world_size"] == 2 and result["export_equal_single_rank"] is True
    assert result["max_abs_diff"] <= 1e-3 and result["mismatches"] == []
    assert result["hashes_equal"] is True  # same threads on CPUs: bit-identical vectors
    top = json.loads((work / "single/embeddings/manifest.json").read_text())
    rows = sum(m["count"] for rel, m in top["manifests"].items() if rel != top["union"])
    assert result["n_vectors"] == rows > 0  # every query set and pool compared
    log = (work / "ranks2/export.log").read_text()
    for rank in (0, 1):  # both ranks encoded a share of the shards
        assert f"rank {rank} of 2: " in log
    top = json.loads((work / "ranks2/embeddings/manifest.json").read_text())
    assert len(top["pools"]) == n_tasks and top["union"]
