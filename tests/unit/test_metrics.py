"""UniIR hit semantics on constructed runs whose hits are known, run-file parsing, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from trace_core.data.mbeir import TEST_TASKS
from trace_core.evaluation.mbeir import build_table, task_ks
from trace_core.evaluation.metrics import (
    RunEntry,
    format_run,
    hit_at_k,
    parse_run_line,
    read_run,
    recall_at_ks,
    score_run_files,
)
from trace_core.io import DataError


def test_hit_at_k_is_any_positive_in_top_k():
    ranked = ["1:5", "1:2", "1:9"]
    assert hit_at_k(ranked, {"1:9"}, 2) == 0.0
    assert hit_at_k(ranked, {"1:9"}, 3) == 1.0
    assert hit_at_k(ranked, {"1:9", "1:5"}, 1) == 1.0  # several positives: still one hit
    assert hit_at_k(ranked, frozenset(), 10) == 0.0  # no positives scores 0
    assert hit_at_k([], {"1:1"}, 5) == 0.0
    with pytest.raises(ValueError):
        hit_at_k(ranked, {"1:9"}, 0)


def test_recall_is_mean_over_given_queries_and_missing_is_miss():
    rankings = {"9:1": ["9:10", "9:11"], "9:2": ["9:20", "9:21"], "9:3": ["9:30"]}
    positives = {"9:1": {"9:10"}, "9:2": {"9:21"}, "9:3": {"9:99"}, "9:4": {"9:40"}}
    out = recall_at_ks(rankings, positives, ["9:1", "9:2", "9:3", "9:4"], [1, 2])
    assert out == {"R@1": 0.25, "R@2": 0.5, "n_queries": 4.0}
    # a query with no qrels entry scores 0
    out = recall_at_ks(rankings, {"9:1": {"9:10"}}, ["9:1", "9:2"], [1])
    assert out["R@1"] == 0.5


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_score_run_files_on_constructed_run(tmp_path):
    entries = [
        RunEntry("9:1", "9:10", 1, 0.9, "x", 0),
        RunEntry("9:1", "9:11", 2, 0.8, "x", 0),
        RunEntry("9:2", "9:22", 1, 0.7, "x", 0),
        RunEntry("9:2", "9:21", 2, 0.6, "x", 0),
        RunEntry("8:1", "8:5", 1, 0.5, "x", 7),
    ]
    # file order must not matter: ranks decide
    run = _write(tmp_path / "run.txt", format_run(reversed(entries)))
    q1 = _write(tmp_path / "mbeir_mscoco_task0_test_qrels.txt", "9:1 0 9:11 1 0\n9:2 0 9:21 1 0\n9:3 0 9:30 1 0\n")
    q2 = _write(tmp_path / "mbeir_cirr_task7_test_qrels.txt", "8:1 0 8:5 1 7\n")
    out = score_run_files(run, [q1, q2], [1, 2])
    # 9:1 hit at rank 2, 9:2 hit at rank 2, 9:3 absent from the run -> miss
    assert out["mscoco_task0_test"] == {"R@1": 0.0, "R@2": pytest.approx(2 / 3), "n_queries": 3.0}
    assert out["cirr_task7_test"] == {"R@1": 1.0, "R@2": 1.0, "n_queries": 1.0}


def test_run_line_errors_name_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.txt", "9:1 Q0 9:10 1 0.5 x 0\n9:1 Q0 9:11 2 0.4 x\n")
    with pytest.raises(DataError, match=r"bad.txt:line 2: run line must have 7 columns"):
        read_run(bad)
    with pytest.raises(DataError, match="line 3: rank and task_id must be integers"):
        parse_run_line("9:1 Q0 9:11 two 0.4 x 0", tmp_path / "r.txt", 3)
    with pytest.raises(DataError, match="column 2 must be 'Q0'"):
        parse_run_line("9:1 Q1 9:11 2 0.4 x 0", tmp_path / "r.txt", 1)
    dup = _write(tmp_path / "dup.txt", "9:1 Q0 9:10 1 0.5 x 0\n9:1 Q0 9:11 1 0.4 x 0\n")
    with pytest.raises(DataError, match="dup.txt:line 2: rank 1 repeated"):
        read_run(dup)


def test_format_parse_round_trip(tmp_path):
    e = RunEntry("5:12", "5:7", 3, 0.123456, "trace", 6)
    assert parse_run_line(format_run([e]), tmp_path, 1) == e


def test_table_picks_r10_for_fashion_columns_and_averages_reported():
    per_task = {t.stem: {"R@1": 0.1, "R@5": 0.5, "R@10": 0.9} for t in TEST_TASKS}
    table = build_table(per_task)
    fashion = {c.task.stem for c in table.columns if c.metric == "R@10"}
    assert fashion == {"fashion200k_task0", "fashion200k_task3", "fashioniq_task7"}
    assert [c.task.column for c in table.columns] == list(range(1, 17))
    assert table.complete and table.n_present == 16
    assert table.average == pytest.approx((13 * 0.5 + 3 * 0.9) / 16)


def test_table_with_missing_tasks_averages_present_ones():
    table = build_table({"mscoco_task0": {"R@5": 0.4}, "fashioniq_task7": {"R@10": 0.2, "R@5": 0.1}})
    assert table.n_present == 2 and not table.complete
    assert table.average == pytest.approx(0.3)
    d = table.as_dict()
    assert d["mscoco_task0"] == 0.4 and d["fashioniq_task7"] == 0.2 and "cirr_task7" not in d
    with pytest.raises(KeyError, match="R@10"):
        build_table({"fashion200k_task0": {"R@5": 0.4}})


def test_task_ks_adds_fashion_cutoffs():
    by = {t.stem: t for t in TEST_TASKS}
    assert task_ks(by["mscoco_task0"], [1, 5, 10], [10, 20, 50]) == [1, 5, 10]
    assert task_ks(by["fashioniq_task7"], [1, 5, 10], [10, 20, 50]) == [1, 5, 10, 20, 50]
    assert task_ks(by["cirr_task7"], [1], []) == [1, 5]


def test_trace_score_cli_prints_json_and_names_bad_line(tmp_path):
    import json

    from typer.testing import CliRunner

    from trace_core.cli import app

    run = _write(tmp_path / "run.txt", "9:1 Q0 9:10 1 0.9 x 0\n9:1 Q0 9:11 2 0.8 x 0\n")
    qrels = _write(tmp_path / "mbeir_mscoco_task0_test_qrels.txt", "9:1 0 9:11 1 0\n9:2 0 9:20 1 0\n")
    res = CliRunner().invoke(app, ["score", "--run", str(run), "--qrels", str(qrels), "--k", "1,2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"mscoco_task0_test": {"R@1": 0.0, "R@2": 0.5, "n_queries": 2.0}}
    bad = _write(tmp_path / "bad.txt", "9:1 Q0 9:10 1 0.9 x\n")
    res = CliRunner().invoke(app, ["score", "--run", str(bad), "--qrels", str(qrels)])
    assert res.exit_code == 2 and "bad.txt:line 1: run line must have 7 columns" in res.output
