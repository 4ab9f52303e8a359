"""Stage evaluate_zeroshot on generated zero-shot-mini: known-geometry encoder, real micro model, MLflow.

The oracle encoder is a test double with known geometry: a candidate's vector is a hash of its
id; a query's vector is the normalised sum of its positives' vectors (512-d, so unrelated
vectors stay near orthogonal). Every metric of every task is then 1 by construction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_params
from micro import micro_tiny

from trace_core.config import ModelParams, Params
from trace_core.data import download
from trace_core.data.zeroshot import DATASETS
from trace_core.evaluation.metrics import score_run_files
from trace_core.evaluation.zeroshot import stage
from trace_core.evaluation.zeroshot.base import LoadContext
from trace_core.evaluation.zeroshot.suite import COLUMNS, load_suite
from trace_core.io import read_json
from trace_core.paths import Paths
from trace_core.stages import STAGES

DIM = 512


def _params(root: Path, tracking: bool = False, **paths: str) -> Params:
    base = tiny_params(root)
    raw = base.model_dump(by_alias=True, mode="json")
    raw["paths"].update({"zeroshot_root": str(root / "data" / "zeroshot"), **paths})
    raw["download"]["zeroshot_mini"] = {"queries": 8, "distractors": 4}
    raw["download"]["mini"]["image_size"] = 56
    raw["tracking"].update(
        {
            "enabled": tracking,
            "tracking_uri": f"sqlite:///{root / 'mlruns.db'}",
            "artifact_location": str(root / "mlart"),
        }
    )
    raw["export"].update({"batch_size": 8, "max_new_tokens": 3})
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zs_ws")
    params = _params(root)
    download.prepare_zeroshot(params, Paths.from_params(params, root), "mini", None)
    return root


@dataclass
class Enc:
    vectors: np.ndarray
    routes: list[str]
    new_tokens: list[int]
    chains: list[str]


def _vec(key: str) -> np.ndarray:
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class OracleEncoder:
    """Query vectors point at their positives (looked up by query item)."""

    model_id = "oracle"
    dim = DIM

    def __init__(self, root: Path) -> None:
        tasks, _ = load_suite(LoadContext(root / "data" / "zeroshot", root / ".trace" / "crops"), list(DATASETS))
        self.positives = {q.qid: sorted(q.positives) for t in tasks for q in t.queries}

    def encode_candidates(self, items, image_root, batch_size):  # type: ignore[no-untyped-def]
        return np.stack([_vec(it.id) for it in items])

    def encode_queries(self, items, image_root, mode, max_new_tokens, batch_size):  # type: ignore[no-untyped-def]
        vecs = [sum(_vec(p) for p in self.positives[it.id]) for it in items]
        vecs = [v / np.linalg.norm(v) for v in vecs]
        return Enc(np.stack(vecs), ["direct"] * len(items), [0] * len(items), [""] * len(items))


def test_oracle_scores_every_column_one(workspace: Path) -> None:
    params = _params(workspace)
    paths = Paths.from_params(params, workspace)
    metrics = stage.run(params, paths, encoder=OracleEncoder(workspace))
    assert list(metrics["columns"]) == [c.key for c in COLUMNS] and metrics["n_columns"] == 13
    assert metrics["columns"] == {c.key: pytest.approx(1.0) for c in COLUMNS}
    assert metrics["missing"] == [] and metrics["model_id"] == "oracle"
    assert read_json(paths.metrics_file("zeroshot")) == json.loads(json.dumps(metrics))
    report = (paths.reports_dir / "zeroshot.md").read_text()
    assert all(c.label in report for c in COLUMNS) and "zero-shot-mini" in report
    assert "| this run | " + " | ".join(["100.0"] * 13) + " |" in report
    assert "| TRACE (paper) |" in report and "34.8" in report
    # the run files score back to the same numbers with `trace score`
    out = paths.reports_dir / "zeroshot"
    for task, metric, key in (("circo", "map", "MAP@5"), ("visdial", "recall", "R@1"), ("vist", "recall", "R@1")):
        scored = score_run_files(out / "runs" / f"{task}_run.txt", [out / "qrels" / f"{task}_qrels.txt"], [5], metric)
        k = int(key.split("@")[1])
        again = score_run_files(out / "runs" / f"{task}_run.txt", [out / "qrels" / f"{task}_qrels.txt"], [k], metric)
        assert again[task][key] == pytest.approx(metrics["tasks"][task][key])
        assert scored[task]["n_queries"] == metrics["tasks"][task]["n_queries"]
    run_lines = (out / "runs" / "circo_run.txt").read_text().splitlines()
    assert len(run_lines) == 8 * min(params.evaluate_zeroshot.keep_k, int(metrics["tasks"]["circo"]["n_candidates"]))


def test_wrong_encoder_scores_below_one_and_vist_excludes_context(workspace: Path) -> None:
    class Shuffled(OracleEncoder):
        def encode_queries(self, items, image_root, mode, max_new_tokens, batch_size):  # type: ignore[no-untyped-def]
            return Enc(
                np.stack([_vec(f"noise:{it.id}") for it in items]),
                ["reasoned"] * len(items),
                [3] * len(items),
                ["x"] * len(items),
            )

    params = _params(
        workspace, reports_dir=str(workspace / "reports_wrong"), metrics_dir=str(workspace / "metrics_wrong")
    )
    paths = Paths.from_params(params, workspace)
    metrics = stage.run(params, paths, encoder=Shuffled(workspace))
    assert all(0.0 <= v < 1.0 for v in metrics["columns"].values())
    assert metrics["tasks"]["visdial"]["reasoned_rate"] == 1.0 and metrics["tasks"]["visdial"]["mean_new_tokens"] == 3
    tasks, _ = load_suite(LoadContext(paths.zeroshot_root, paths.zeroshot_crops), ["vist"])
    excluded = {q.qid: q.exclude for q in tasks[0].queries}
    for line in (paths.reports_dir / "zeroshot" / "runs" / "vist_run.txt").read_text().splitlines():
        qid, _, did, *_ = line.split()
        assert did not in excluded[qid]


def test_missing_datasets_read_na(workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    partial = tmp_path / "partial"
    for name in ("visdial", "ccneg"):
        shutil.copytree(workspace / "data" / "zeroshot" / name, partial / name)
    params = _params(
        workspace, zeroshot_root=str(partial), reports_dir=str(tmp_path / "r"), metrics_dir=str(tmp_path / "m")
    )
    with caplog.at_level(logging.WARNING):
        metrics = stage.run(params, Paths.from_params(params, workspace), encoder=OracleEncoder(workspace))
    assert metrics["missing"] == [d for d in DATASETS if d not in ("visdial", "ccneg")]
    assert "zero-shot dataset circo skipped" in caplog.text
    assert metrics["columns"]["visdial"] == 1.0 and metrics["columns"]["circo"] is None and metrics["n_columns"] == 2
    report = (tmp_path / "r" / "zeroshot.md").read_text()
    assert report.count("n/a") >= 11 and "Missing (n/a): sharegpt4v" in report


def test_micro_model_end_to_end(workspace: Path, tmp_path: Path) -> None:
    """The real encoder: routed queries (interleaved VIST and FashionIQ turns included) through the M-BEIR path."""
    from trace_core.model.backbone import build_backbone
    from trace_core.model.inference import TraceEncoder
    from trace_core.model.trace_model import HeadConfig, TraceModel

    mp = ModelParams(tiny=micro_tiny(400, num_layers=1), max_pixels=3136)
    bb = build_backbone(mp, ["a red circle at the top left", "then the blue square moved"] * 10, 0, torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False))
    encoder = TraceEncoder(model, bb.proc, "micro")
    params = _params(workspace, reports_dir=str(tmp_path / "r"), metrics_dir=str(tmp_path / "m"))
    metrics = stage.run(params, Paths.from_params(params, workspace), encoder=encoder)
    assert metrics["n_columns"] == 13 and all(0.0 <= v <= 1.0 for v in metrics["columns"].values())
    for name in ("vist", "mtfashioniq", "circo", "ccneg"):
        t = metrics["tasks"][name]
        assert t["direct_rate"] + t["reasoned_rate"] + t["forced_rate"] == pytest.approx(1.0)
    timings = read_json(tmp_path / "m" / "timings" / "evaluate_zeroshot.json")
    assert timings["query_qps"] > 0 and set(timings["query_qps_by_task"]) == set(metrics["tasks"])
    assert "qps" not in json.dumps(metrics)  # run-specific numbers stay out of the DVC metrics file


def test_metrics_logged_to_the_stage_run(workspace: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from trace_core import tracking

    params = _params(workspace, tracking=True, reports_dir=str(tmp_path / "r"), metrics_dir=str(tmp_path / "m"))
    paths = Paths.from_params(params, workspace)
    spec = STAGES["evaluate_zeroshot"]
    with tracking.track_stage(params, spec.name, spec.params, spec.metrics_file(paths), spec.artifacts(paths)) as rid:
        stage.run(params, paths, encoder=OracleEncoder(workspace))
    run = MlflowClient(tracking_uri=params.tracking.tracking_uri).get_run(rid)
    assert (
        run.data.metrics["columns.circo"] == pytest.approx(1.0) and run.data.metrics["tasks.vist.R_1"] == 1.0
    )  # MLflow keys: "@" -> "_"
    assert run.data.tags["trace.model_id"] == "oracle" and run.data.tags["trace.stage"] == "evaluate_zeroshot"
    assert run.data.params["evaluate_zeroshot.keep_k"] == "50"
    assert run.data.metrics["timings.query_qps"] > 0
