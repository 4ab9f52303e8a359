"""bench/bench_index.py: its vector generators, the rows it writes and the README table (in-process engines)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = [
    "n",
    "dim",
    "vectors",
    "engine",
    "index",
    "params",
    "qps_batched",
    "qps_single",
    "recall_at_10",
    "build_s",
    "memory_mb",
    "run",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_index", ROOT / "bench" / "bench_index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_index"] = module
    spec.loader.exec_module(module)
    return module


def test_clustered_set_has_low_intrinsic_dimension(bench):
    spec = bench.ClusterSpec(clusters=50, intrinsic_dim=8)
    x = bench.clustered(3000, 64, 0, spec)
    assert x.shape == (3000, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    energy = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    assert energy[:8].sum() / energy.sum() > 0.9  # 8 directions hold the variance
    u = bench.uniform(3000, 64, 0)
    energy_u = np.linalg.svd(u - u.mean(0), compute_uv=False) ** 2
    assert energy_u[:8].sum() / energy_u.sum() < 0.3
    queries = bench.clustered(100, 64, 1, spec)  # same subspace, other draws
    assert float(np.max(queries @ x.T, axis=1).mean()) > 0.9


def test_tiled_copies_stay_near_their_base(bench):
    base = bench.uniform(7, 32, 3)
    rows = bench.tiled(base, 70, 0.1, 0)
    cos = np.sum(rows * base[np.arange(70) % 7], axis=1)
    assert rows.shape == (70, 32) and cos.min() > 0.98 and cos.max() < 1.0


def test_in_process_engines_write_the_listed_fields(bench, tmp_path):
    out = tmp_path / "bench_index.json"
    argv = ["--sizes", "600", "--dims", "16", "--vectors", "uniform,clustered", "--queries", "40", "--single", "5"]
    argv += ["--repeats", "1", "--engines", "numpy,faiss-flat,faiss-hnsw,faiss-ivf", "--hnsw-ef", "16,64"]
    argv += ["--ivf-nprobe", "1,4", "--clusters", "20", "--out", str(out)]
    args = bench.parse(argv)
    bench.bench(args, in_netns=False)
    rows = json.loads(out.read_text())["rows"]
    assert all(list(r) == FIELDS for r in rows)
    by = {(r["vectors"], r["engine"], r["index"], json.dumps(r["params"])): r for r in rows}
    assert len(by) == len(rows) == 2 * (1 + 1 + 2 + 2)
    for vectors in ("uniform", "clustered"):
        assert by[(vectors, "numpy", "FLAT", "{}")]["recall_at_10"] == 1.0
        assert by[(vectors, "faiss", "FLAT", "{}")]["recall_at_10"] == 1.0
        hnsw = [r for r in rows if r["vectors"] == vectors and r["index"] == "HNSW"]
        assert [r["params"]["ef"] for r in hnsw] == [16, 64] and hnsw[1]["recall_at_10"] >= hnsw[0]["recall_at_10"]
    assert all(r["qps_batched"] > 0 and r["qps_single"] > 0 and r["memory_mb"] > 0 for r in rows)
    bench.bench(bench.parse([*argv[:-2], "--engines", "numpy", "--out", str(out)]), in_netns=False)
    again = json.loads(out.read_text())
    assert len(again["runs"]) == 2 and len(again["rows"]) == len(rows) + 2  # the second run adds its rows
    first, second = (run["started"] for run in again["runs"])
    assert sorted(r["run"] for r in again["rows"] if r["engine"] == "numpy") == [first, first, second, second]
    assert {r["run"] for r in again["rows"] if r["engine"] != "numpy"} == {first}
    table = bench.markdown(again["rows"])  # one line per case, engine and index: the latest run's
    assert table.count("\n") == 2 + 2 * 4 - 1 and "| 600 | 16 | clustered | faiss | HNSW |" in table
    assert "*" not in table  # every ratio over its own run's exact baseline


def test_markdown_picks_the_fastest_setting_reaching_the_target(bench):
    def row(engine, index, params, qps, rec):
        return dict(zip(FIELDS, [1000, 8, "uniform", engine, index, params, qps, qps, rec, 0.0, 1.0, "r"], strict=True))

    rows = [
        row("numpy", "FLAT", {}, 100.0, 1.0),
        row("faiss", "HNSW", {"ef": 16}, 3000.0, 0.80),
        row("faiss", "HNSW", {"ef": 64}, 1500.0, 0.96),
        row("faiss", "HNSW", {"ef": 256}, 500.0, 0.99),
    ]
    lines = bench.markdown(rows).splitlines()
    hnsw = next(line for line in lines if "HNSW" in line)
    assert "ef=64" in hnsw and "| 15.0 |" in hnsw
    rows[2]["recall_at_10"] = 0.9
    rows[3]["recall_at_10"] = 0.94
    assert "ef=256" in next(line for line in bench.markdown(rows).splitlines() if "HNSW" in line)
    later = [{**r, "run": "s", "qps_batched": r["qps_batched"] / 2} for r in rows[1:]]  # a later run, no baseline
    hnsw = next(line for line in bench.markdown(rows + later).splitlines() if "HNSW" in line)
    assert "| 250 |" in hnsw and "| 2.5* |" in hnsw  # the latest run's row, over run r's baseline, marked
