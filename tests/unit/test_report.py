"""Evaluation report: MLflow headline metrics in %, plot rows, PNGs, chance level."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest

from trace_core.data.mbeir import TEST_TASKS
from trace_core.evaluation.metrics import chance_hit_at_k
from trace_core.evaluation.report import headline_metrics, metric_slug, plot_rows, write_reports

MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-./ ]+$")  # what MLflow accepts in a metric name


def _metrics(n_tasks: int = 16) -> dict[str, Any]:
    tasks = TEST_TASKS[:n_tasks]
    table: dict[str, Any] = {t.stem: (i + 1) / 20 for i, t in enumerate(tasks)}
    table["average"] = sum(table.values()) / len(tasks)
    table["n_tasks"] = len(tasks)
    per_task = {t.stem: {f"R@{t.reported_k}": table[t.stem], "R@1": 0.0, "chance": 0.05} for t in tasks}
    routing = {
        t.stem: {"direct_rate": 0.5, "reasoned_rate": 0.25, "forced_rate": 0.25, "mean_new_tokens": 3.0} for t in tasks
    }
    return {
        "local": {"table": table, "tasks": per_task},
        "routing": routing,
        "model_id": "m",
        "index": {"backend": "numpy", "index_type": "FLAT"},
    }


def test_metric_slugs_are_the_table_columns_and_valid_mlflow_names() -> None:
    slugs = [metric_slug(t) for t in TEST_TASKS]
    assert slugs[2] == "03_qt-ci_Fashion200K"
    assert slugs[14] == "15_qi.qt-ci.ct_OVEN"
    assert len(set(slugs)) == 16 and all(MLFLOW_NAME.match(s) for s in slugs)


def test_headline_metrics_in_percent_with_the_average_first() -> None:
    metrics = _metrics()
    head = headline_metrics(metrics, {"query_qps": 12.5, "search_qps": None})
    assert head["mbeir/local/avg"] == pytest.approx(100 * metrics["local"]["table"]["average"])
    assert head["mbeir/local/tasks/03_qt-ci_Fashion200K"] == pytest.approx(15.0)
    assert head["mbeir/query_qps"] == 12.5 and "mbeir/search_qps" not in head
    local = sorted(k for k in head if k.startswith("mbeir/local/"))
    assert local[0] == "mbeir/local/avg" and len(local) == 17  # MLflow sorts names: the average leads
    assert all(MLFLOW_NAME.match(k) for k in head)


def test_plot_rows_use_table_labels_and_percent() -> None:
    per_task, routing = plot_rows(_metrics())
    assert per_task[0] == [TEST_TASKS[0].label, "local", "R@5", 5.0, 5.0]
    assert per_task[2][2] == "R@10"  # Fashion200K reports R@10
    assert routing[0] == [TEST_TASKS[0].label, 50.0, 25.0, 25.0]


def test_write_reports_files_are_0644(tmp_path: Path) -> None:
    files = write_reports(_metrics(4), tmp_path)
    names = {f.relative_to(tmp_path).as_posix() for f in files}
    assert names == {"mbeir.md", "plots/per_task.csv", "plots/routing.csv", "plots/per_task.png", "plots/routing.png"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f  # group and others can read
    assert (tmp_path / "plots/per_task.png").read_bytes()[:4] == b"\x89PNG"
    assert "chance local" in (tmp_path / "mbeir.md").read_text()


def test_chance_hit_at_k() -> None:
    assert chance_hit_at_k(10, 1, 5) == pytest.approx(0.5)
    assert chance_hit_at_k(10, 2, 1) == pytest.approx(0.2)
    assert chance_hit_at_k(10, 2, 2) == pytest.approx(1 - (8 / 10) * (7 / 9))
    assert chance_hit_at_k(10, 0, 5) == 0.0
    assert chance_hit_at_k(5, 1, 10) == 1.0  # k covers the whole pool
    assert chance_hit_at_k(1_000_000, 1, 5) == pytest.approx(5e-6)
