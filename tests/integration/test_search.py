"""`trace search` on a tiny built index: a micro model trained and registered (champion), its
export and a Milvus Lite index, then the command in a fresh process (a cold start).

Slow: training the micro model and exporting M-BEIR-mini take ~1 min on two cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _trace_project import env, run
from micro import SMALL_MINI, micro_train_params

from trace_core.config import dump_params
from trace_core.data.mbeir import global_pool_file, load_pool, local_pool_file
from trace_core.paths import Paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train (registers version 1), make it the champion, export (short chains) and index: the CLI."""
    from mlflow.tracking import MlflowClient

    from trace_core.config import load_params
    from trace_core.data.mini import write_mini

    root = tmp_path_factory.mktemp("search")
    raw = dump_params(micro_train_params(root))
    raw["export"]["max_new_tokens"] = 6
    raw["export"]["batch_size"] = 8
    (root / "params.yaml").write_text(json.dumps(raw))  # JSON is YAML
    params = load_params(root / "params.yaml")
    write_mini(SMALL_MINI, params.base.seed, Paths.from_params(params, root).data_root)
    for stage in ("train", "export", "index"):
        run([sys.executable, "-m", "trace_core", stage, "--params", str(root / "params.yaml")], root)
    client = MlflowClient(params.tracking.tracking_uri, params.tracking.tracking_uri)
    client.set_registered_model_alias(params.tracking.registered_model, "champion", "1")
    return root


def _search(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "trace_core", "search", *args, "--params", str(project / "params.yaml")]
    proc = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _dids(path: Path) -> set[str]:
    return {c.did for c in load_pool(path)}


def test_text_query_returns_k_hits_of_the_union_pool(project: Path) -> None:
    t0 = time.perf_counter()
    out = json.loads(_search(project, "a red car", "--k", "5", "--json").stdout)
    cold = time.perf_counter() - t0
    (project / "search_cold_seconds.txt").write_text(f"{cold:.2f}\n")
    root = project / "data" / "mbeir"
    assert out["pool"] == "union" and len(out["hits"]) == 5
    assert "champion" in out["model_source"] and out["route"] in ("direct", "reasoned", "forced")
    assert [h["rank"] for h in out["hits"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert {h["did"] for h in out["hits"]} <= _dids(global_pool_file(root, "test"))
    assert all(h["text"] or h["img_path"] for h in out["hits"])  # candidates resolved from the pool file


def test_same_ranking_as_exact_search_of_the_export(project: Path) -> None:
    """The hits are the exact top-k of the exported union vectors for the model's query vector."""
    from trace_core.config import load_params
    from trace_core.indexing.backend import NumpyIndex
    from trace_core.indexing.shards import load_embeddings
    from trace_core.model.inference import load_encoder
    from trace_core.search import query_encode_item, query_record

    params = load_params(project / "params.yaml")
    paths = Paths.from_params(params, project)
    out = json.loads(_search(project, "a red car", "--k", "5", "--json", "--routing", "never").stdout)
    item, _ = query_encode_item(query_record("a red car", None, None), params, paths)
    vec = load_encoder(paths.model_dir).encode_queries([item], paths.data_root, "never", 0, 1).vectors
    ids, rows = load_embeddings(paths.embeddings_dir / "test/candidates/union/manifest.json")
    exact = NumpyIndex(rows.shape[1])
    exact.add(rows)
    scores, pos = exact.search(vec, 5)
    assert [h["did"] for h in out["hits"]] == [ids[p] for p in pos[0]]
    np.testing.assert_allclose([h["score"] for h in out["hits"]], scores[0], atol=1e-4)


def test_task_instruction_and_local_pool(project: Path) -> None:
    out = json.loads(_search(project, "a red car", "--task", "mscoco_task0", "--k", "3", "--json").stdout)
    assert out["pool"] == "mscoco_task0" and len(out["hits"]) == 3
    assert out["query"]["instruction"] and out["query"]["encoded"].endswith("a red car.")
    assert {h["did"] for h in out["hits"]} <= _dids(local_pool_file(project / "data" / "mbeir", "mscoco_task0"))
    text = _search(project, "a red car", "--task", "mscoco_task0", "--k", "3").stdout
    assert "route" in text and "pool     mscoco_task0: top 3" in text and text.count("\n") >= 6


def test_image_query_and_bad_input_are_named(project: Path) -> None:
    root = project / "data" / "mbeir"
    image = next(root.rglob("*.png"), None) or next(root.rglob("*.jpg"))
    out = json.loads(_search(project, "--image", str(image), "--k", "2", "--json").stdout)
    assert len(out["hits"]) == 2 and out["query"]["image"] == str(image.resolve())
    missing = _search(project, "--image", "nope.png", check=False)
    assert missing.returncode == 2 and "nope.png" in missing.stderr
    wrong = _search(project, "a red car", "--task", "nights_task4", check=False)
    assert wrong.returncode == 2 and "takes image queries" in wrong.stderr


def test_champion_download_and_model_mismatch(project: Path, tmp_path: Path) -> None:
    """Without the local weights the champion comes from the registry; another model is refused."""
    model_dir = project / "models" / "trace"
    moved = tmp_path / "trace-model"
    shutil.move(model_dir, moved)
    try:
        out = json.loads(_search(project, "a red car", "--k", "2", "--json").stdout)
        assert "champion" in out["model_source"] and "/.trace/champion/v1" in out["model_source"]
    finally:
        shutil.move(moved, model_dir)
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    weights = next(other.glob("*.safetensors"))
    state = load_file(weights)
    first = next(iter(state))
    state[first] = state[first] + 0.01  # other weights: another model id
    save_file(state, weights, metadata={"format": "pt"})
    refused = _search(project, "a red car", "--model-dir", str(other), check=False)
    assert refused.returncode == 2 and "re-run `trace export` and `trace index`" in refused.stderr
