"""export -> index (real Milvus Lite) -> evaluate on a tiny M-BEIR layout.

The encoder is a test double of the model with known geometry (see ``export_doubles``), so the
expected recall is known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_doubles import DIM, KeyEncoder, layout_params

from trace_core.evaluation import evaluate
from trace_core.evaluation.metrics import score_run_files
from trace_core.indexing import build_index, export
from trace_core.io import DataError, read_json


@pytest.fixture()
def setup(tmp_path):
    return layout_params(tmp_path)


def test_export_index_evaluate(setup):
    params, paths = setup
    enc = KeyEncoder()
    top = export.run(params, paths, encoder=enc)
    assert enc.calls == {"queries": 10, "candidates": 12 + 8 + 1}  # each candidate once, union-only included
    union = read_json(paths.embeddings_dir / top["union"])
    assert union["count"] == 21 and [p["pool"] for p in union["parts"]] == ["mscoco_task0", "cirr_task7", "union_extra"]
    qm = read_json(paths.embeddings_dir / top["queries"]["cirr_task7"])
    assert qm["routes"] == {"direct": 0, "reasoned": 4, "forced": 0} and "qps" not in qm  # timings kept apart
    timings = read_json(paths.timings_file("export"))
    assert timings["queries"]["cirr_task7"]["rows"] == 4 and timings["query_qps"] > 0
    routing = [json.loads(x) for x in (paths.embeddings_dir / "routing.jsonl").read_text().splitlines()]
    assert len(routing) == 10 and {r["route"] for r in routing if r["task"] == "cirr_task7"} == {"reasoned"}

    # resume: nothing re-encoded; a removed shard is the only one redone
    export.run(params, paths, encoder=enc)
    assert enc.calls["candidates"] == 21
    (paths.embeddings_dir / "test/candidates/mscoco_task0/shard-00001.json").unlink()
    export.run(params, paths, encoder=enc)
    assert enc.calls["candidates"] == 25

    manifest = build_index.run(params, paths)
    assert set(manifest["pools"]) == {"mscoco_task0", "cirr_task7", "union"}
    assert all(e["collection"].startswith(f"trace_test_key_enc_{p}_") for p, e in manifest["pools"].items())

    metrics = evaluate.run(params, paths)
    local = metrics["local"]["tasks"]
    assert local["mscoco_task0"]["R@1"] == pytest.approx(5 / 6)  # 9:106 names 9:12, a miss
    assert local["cirr_task7"]["R@5"] == 1.0
    assert metrics["local"]["table"]["average"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert metrics["union"]["tasks"]["mscoco_task0"]["R@1"] == pytest.approx(5 / 6)
    assert metrics["routing"]["cirr_task7"]["reasoned_rate"] == 1.0
    assert metrics["routing"]["mscoco_task0"]["direct_rate"] == 1.0
    for f in ("mbeir.md", "plots/per_task.csv", "plots/routing.csv", "plots/per_task.png", "plots/routing.png"):
        assert (paths.reports_dir / f).exists(), f
    assert "| local |" in (paths.reports_dir / "mbeir.md").read_text()

    # the run file scores the same through `trace score`
    run = paths.reports_dir / "runs/mbeir_test_local_run.txt"
    scored = score_run_files(run, [paths.data_root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt"], [1, 5])
    assert scored["mscoco_task0_test"]["R@1"] == pytest.approx(5 / 6)

    # the numpy backend gives the same table
    np_params = params.model_copy(update={"index": params.index.model_copy(update={"backend": "numpy"})})
    build_index.run(np_params, paths)
    assert evaluate.run(np_params, paths)["local"]["tasks"] == local


def test_failed_rebuild_keeps_previous_index(setup):
    params, paths = setup
    export.run(params, paths, encoder=KeyEncoder())
    first = build_index.run(params, paths)
    # corrupt one shard: the rebuild fails naming the file, the old manifest and collections stay
    shard = paths.embeddings_dir / "test/candidates/cirr_task7/shard-00001.ids.npy"
    np.save(shard, np.asarray(["8:5"]))
    with pytest.raises(DataError, match="shard-00001"):
        build_index.run(params, paths)
    assert read_json(paths.index_manifest) == first
    from trace_core.indexing.milvus import MilvusIndex, connect

    client = connect(str(paths.milvus_db), 10.0)
    try:
        assert sorted(client.list_collections()) == sorted(e["collection"] for e in first["pools"].values())
        for entry in first["pools"].values():
            assert len(MilvusIndex.open(client, entry["collection"], DIM, params.index)) == entry["count"]
    finally:
        client.close()
    np.save(shard, np.asarray(["8:5", "8:6", "8:7", "8:8"]))
    assert build_index.run(params, paths) == first  # idempotent rebuild
    metrics = evaluate.run(params, paths)
    assert metrics["local"]["tasks"]["cirr_task7"]["R@1"] == 1.0


def test_query_dimension_mismatch_is_named(setup):
    params, paths = setup
    export.run(params, paths, encoder=KeyEncoder())
    build_index.run(params, paths)
    qm_path = paths.embeddings_dir / "test/queries/mscoco_task0/manifest.json"
    qm = read_json(qm_path)
    qdir = qm_path.parent
    for s in qm["shards"]:
        ids = np.load(qdir / f"{s['name']}.ids.npy")
        np.save(qdir / f"{s['name']}.vectors.npy", np.ones((len(ids), DIM + 2), dtype=np.float16))
        s["dim"] = DIM + 2
    qm["dim"] = DIM + 2
    qm_path.write_text(json.dumps(qm))
    with pytest.raises(
        DataError, match=r"mscoco_task0/manifest.json:dim: query dimension 18 differs from the index's 16"
    ):
        evaluate.run(params, paths)


def test_stale_index_and_bad_routing_are_named(setup):
    params, paths = setup
    with pytest.raises(DataError, match="routing must be adaptive, never or always, got 'sometimes'"):
        export.run(params, paths, routing="sometimes", encoder=KeyEncoder())
    export.run(params, paths, encoder=KeyEncoder())
    build_index.run(params, paths)
    other = KeyEncoder()
    other.model_id = "another-model"
    export.run(params, paths, encoder=other)
    with pytest.raises(DataError, match="index built for model test-key-encoder, embeddings are from another-model"):
        evaluate.run(params, paths)
