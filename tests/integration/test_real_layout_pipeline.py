"""The whole pipeline on a real-layout M-BEIR sample (tests/fixtures/mbeir_real), through the CLI.

The fixture holds literal UniIR record shapes for all ten datasets (see its README): WebQA and
EDIS image+text candidates, OVEN/InfoSeek cross-dataset positives, CIRR/FashionIQ id-only
``src_content``, image-only targets with ``txt: null``, quotes and carriage returns in texts, the
instructions TSV with empty cells, per-dataset train files and qrels, and the upsampled union
train file in which qids repeat with identical records. ``trace download`` lays it out from
``download.from_dir``; validate, cot-generate (the transformers teacher on a tiny random
Qwen2-VL), cot-curate, cot-build, train (two steps), export, index (Milvus Lite: local pools
FLAT, union HNSW) and evaluate then run on it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from _tiny_teacher import build_tiny_teacher
from micro import micro_train_params
from typer.testing import CliRunner

from trace_core.cli import app
from trace_core.config import dump_params
from trace_core.data.mbeir import TEST_TASKS, distinct_queries, load_queries, union_train_file
from trace_core.io import read_json

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mbeir_real"
EDIT_DATASETS = {7, 8}  # FashionIQ, CIRR: image-only targets

pytestmark = pytest.mark.slow


def _params(root: Path, teacher: Path) -> Path:
    raw = dump_params(micro_train_params(root, tracking=False, max_steps=2, per_device_batch_size=4, val_queries=4))
    raw["download"]["from_dir"] = str(FIXTURE)
    raw["cot_generate"]["teacher"].update(
        kind="transformers", model=str(teacher), max_new_tokens=64, batch_size=4, device="cpu", dtype="float32"
    )
    raw["cot_curate"].update(reasoning_max_tokens=32, answer_max_tokens=8, verifier="none")
    raw["export"].update(max_new_tokens=4, batch_size=8, shard_size=64, device="cpu")
    raw["index"].update(index_type="HNSW", local_index_type="FLAT")
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real_layout")
    params = _params(root, build_tiny_teacher(root / "teacher"))
    runner = CliRunner()
    for command in ("download", "validate", "cot-generate", "cot-curate", "cot-build", "train", "export", "index"):
        result = runner.invoke(app, [command, "-p", str(params)])
        assert result.exit_code == 0, f"trace {command}: {result.output}\n{result.exception!r}"
    result = runner.invoke(app, ["evaluate", "-p", str(params)])
    assert result.exit_code == 0, f"trace evaluate: {result.output}\n{result.exception!r}"
    return root


def test_download_lays_out_the_sample_and_validation_passes(workspace: Path) -> None:
    data = workspace / "data" / "mbeir"
    manifest = read_json(data / "MANIFEST.json")
    fixture_files = {p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob("*") if p.is_file()}
    fixture_files.discard("README.md")
    assert {f["path"] for f in manifest["files"]} == fixture_files
    summary = read_json(workspace / "reports" / "validation" / "summary.json")
    assert summary["success"] and not summary["failures"] and len(summary["found_test_tasks"]) == 16


def test_teacher_sees_each_distinct_query_once_and_build_expands_repeats(workspace: Path) -> None:
    union = load_queries(union_train_file(FIXTURE))
    distinct = distinct_queries(union)
    assert len(union) > len(distinct)  # the sample is upsampled
    raw_dir = workspace / "data" / "cot" / "raw"
    top = read_json(raw_dir / "manifest.json")
    assert top["rows"] == len(distinct) and top["training_records"] == len(union)
    rows = [json.loads(line) for p in sorted(raw_dir.glob("shard-*.jsonl")) for line in p.read_text().splitlines()]
    assert Counter(r["qid"] for r in rows) == Counter(q.qid for q in distinct)  # one teacher row per query
    z1 = [r for r in rows if r["z"] == 1]
    assert z1 and all(r["teacher"].startswith("transformers:") and r["status"] in ("ok", "error") for r in z1)
    edits = [r for r in z1 if r["dataset_id"] in EDIT_DATASETS]
    assert edits and all(r["target_txt"] is None and r["target_img_path"] for r in edits)  # the verifier's target

    built = [json.loads(line) for line in (workspace / "data/cot/mbeir_cot_train.jsonl").read_text().splitlines()]
    assert Counter(r["qid"] for r in built) == Counter(q.qid for q in union)  # the upsampled distribution
    stats = read_json(workspace / "metrics" / "cot_build.json")
    assert stats["occurrences"] == len(union) and stats["distinct_queries"] == len(distinct)
    texts = [r["positive"]["text"] for r in built if r["positive"]["text"]]
    assert texts and all(t[0].isupper() and t.endswith((".", "?", "!")) for t in texts)  # UniIR normalisation
    curate = read_json(workspace / "metrics" / "cot_curate.json")
    assert curate["teacher_rows"] == len(z1)


def test_local_pools_exact_union_approximate_and_recorded(workspace: Path) -> None:
    assert read_json(workspace / "metrics" / "train.json")["steps"] == 2
    index = read_json(workspace / "index" / "manifest.json")
    assert {stem: e["index_type"] for stem, e in index["pools"].items()} == {
        **{t.stem: "FLAT" for t in TEST_TASKS},
        "union": "HNSW",
    }
    metrics = read_json(workspace / "metrics" / "mbeir.json")
    assert metrics["local"]["table"]["n_tasks"] == 16 and 0.0 <= metrics["local"]["table"]["average"] <= 1.0
    assert metrics["local"]["approximate"] == [] and sorted(metrics["union"]["approximate"]) == sorted(
        t.stem for t in TEST_TASKS
    )
    assert all(spec["exact"] and spec["index_type"] == "FLAT" for spec in metrics["local"]["index"].values())
    union_spec = metrics["union"]["index"]["cirr_task7"]
    assert union_spec["index_type"] == "HNSW" and union_spec["M"] == 16 and union_spec["ef"] >= 64
    report = (workspace / "reports" / "mbeir.md").read_text()
    local_row = next(line for line in report.splitlines() if line.startswith("| local |"))
    union_row = next(line for line in report.splitlines() if line.startswith("| union |"))
    assert "†" not in local_row and union_row.count("†") == 17  # 16 tasks + the average
    assert "approximate search on 16 of 16 tasks" in report
