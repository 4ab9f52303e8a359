"""The whole pipeline, once: `dvc repro` of all eleven stages on a shrunken M-BEIR-mini (+ zero-shot-mini).

Slow (minutes on two cores); `make test` / CI run it after the fast suite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from _trace_project import make_project, run

from trace_core.data.mbeir import TEST_TASKS

STAGES = [
    "download",
    "validate",
    "cot_generate",
    "cot_curate",
    "cot_build",
    "train",
    "self_train",
    "export",
    "index",
    "evaluate",
    "evaluate_zeroshot",
]
#: training shrunk to one short epoch; data sizes come from _trace_project.SMALL.
E2E = {
    "train.epochs": 1.0,
    "train.per_device_batch_size": 8,
    "train.val_queries": 16,
    "train.eval_steps": 1000,
    "train.save_steps": 1000,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("e2e") / "project", E2E)
    t0 = time.perf_counter()
    run(["dvc", "repro"], proj)
    (proj / "e2e_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return proj


def test_all_stages_ran_and_are_up_to_date(project: Path) -> None:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    assert "up to date" in run(["dvc", "status"], project).stdout


def test_sixteen_column_table(project: Path) -> None:
    metrics = json.loads((project / "metrics/mbeir.json").read_text())
    table = metrics["local"]["table"]
    assert [t.stem for t in TEST_TASKS if t.stem in table] == [t.stem for t in TEST_TASKS]
    assert all(0.0 <= table[t.stem] <= 1.0 for t in TEST_TASKS)
    assert table["n_tasks"] == 16 and 0.0 <= table["average"] <= 1.0
    assert metrics["routing"] and "query_qps" not in metrics  # timings stay out of DVC outputs
    timings = json.loads((project / "metrics/timings/evaluate.json").read_text())
    assert timings["query_qps"] > 0 and timings["search_qps"] > 0
    report = (project / "reports/mbeir.md").read_text()
    assert all(t.label in report for t in TEST_TASKS)
    for name in ("plots/per_task.csv", "plots/routing.csv", "cot_curate.md"):
        assert (project / "reports" / name).is_file(), name
    assert list((project / "reports/validation").rglob("index.html")), "no Data Docs"
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert "metrics/mbeir.json" in json.dumps(shown)


def test_zeroshot_table(project: Path) -> None:
    from trace_core.evaluation.zeroshot.suite import COLUMNS

    metrics = json.loads((project / "metrics/zeroshot.json").read_text())
    assert set(metrics["columns"]) == {c.key for c in COLUMNS} and metrics["n_columns"] == 13
    assert all(0.0 <= v <= 1.0 for v in metrics["columns"].values()) and metrics["missing"] == []
    report = (project / "reports/zeroshot.md").read_text()
    assert all(c.label in report for c in COLUMNS) and "zero-shot-mini" in report
    assert (project / "reports/zeroshot/runs/circo_run.txt").is_file()
    assert json.loads((project / "metrics/timings/evaluate_zeroshot.json").read_text())["query_qps"] > 0


def test_curation_threshold_reruns_curation_not_teacher(project: Path) -> None:
    params = project / "params.yaml"
    original = params.read_text()
    raw = yaml.safe_load(original)
    raw["cot_curate"]["verifier_threshold"] = 0.5
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        stale = json.loads(run(["dvc", "status", "--json"], project).stdout)
    finally:
        params.write_text(original)
    assert "cot_curate" in stale and "cot_generate" not in stale and "download" not in stale


def test_mlflow_parent_children_and_registry(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("trace")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`trace.kind` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    assert sorted(r.data.tags["trace.stage"] for r in children) == sorted(STAGES)
    assert all(r.data.tags["trace.params_hash"] == parents[0].data.tags["trace.params_hash"] for r in children)
    champion = client.get_model_version_by_alias("trace-retriever", "champion")
    assert champion.tags["trace.promotion"] == "champion"


def test_registered_pyfunc_equals_load_encoder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The champion served through MLflow embeds exactly as the saved model loaded directly."""
    import mlflow
    import numpy as np
    import pandas as pd

    from trace_core.config import load_params
    from trace_core.model.inference import load_encoder
    from trace_core.paths import Paths, served_model_dir
    from trace_core.types import EncodeItem

    uri = f"sqlite:///{project / 'mlruns.db'}"
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # undone after the test: no leak into others
        monkeypatch.setenv(key, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/trace-retriever@champion")
    texts = ["a red circle", "a small blue square on the left"]
    frame = pd.DataFrame({"text": texts, "side": ["candidate", "query"], "task_id": [0, 0]})
    served = model.predict(frame, params={"image_root": str(project / "data/mbeir"), "routing": "never"})
    params = load_params(project / "params.yaml")
    encoder = load_encoder(served_model_dir(params, Paths.from_params(params, project)))  # phase 2 when enabled
    items = [EncodeItem(id=str(i), task_id=0, text=t, img_path=None) for i, t in enumerate(texts)]
    cand = encoder.encode_candidates(items[:1], project / "data/mbeir", 8)
    query = encoder.encode_queries(items[1:], project / "data/mbeir", mode="never", max_new_tokens=192, batch_size=8)
    assert served.shape == (2, encoder.dim)
    np.testing.assert_allclose(served[0], cand[0], atol=1e-5)
    np.testing.assert_allclose(served[1], query.vectors[0], atol=1e-5)


def test_training_beats_the_untrained_model(project: Path) -> None:
    train = json.loads((project / "metrics/train.json").read_text())
    k = next(key for key in train if key.startswith("val_r") and key.endswith("_untrained")).split("_")[1]
    assert train[f"val_{k}_trained"] > train[f"val_{k}_untrained"], train
    assert train[f"val_{k}_trained"] > train[f"val_{k}_chance"], train


def test_routing_follows_the_dataset_rule(project: Path) -> None:
    """Training routes follow the rule: z=1 exactly for cot_generate.routing.reason_datasets.

    (Whether the trained model then routes the same way needs more steps than this shrunken run
    takes; `make demo` reports it as val_route_accuracy, 1.00 on the embedded default.)
    """
    params = yaml.safe_load((project / "params.yaml").read_text())
    reason = set(params["cot_generate"]["routing"]["reason_datasets"])
    per_dataset = json.loads((project / "metrics/cot_build.json").read_text())["per_dataset"]
    assert per_dataset, "no training rows"
    for key in per_dataset:  # "dataset5_z1"
        dataset, z = key.removeprefix("dataset").split("_z")
        assert (int(z) == 1) == (int(dataset) in reason), key
    rows = [json.loads(line) for line in (project / "data/cot/mbeir_cot_train.jsonl").read_text().splitlines()]
    assert {r["dataset_id"] for r in rows if r["z"] == 1} == reason & {r["dataset_id"] for r in rows}
    assert all(r["target"] == "<|emb|>" for r in rows if r["z"] == 0)
    assert all(r["target"].endswith("<|emb|>") and len(r["target"]) > 20 for r in rows if r["z"] == 1)
