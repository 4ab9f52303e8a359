"""Ablation summary on constructed metrics (the numbers are known by construction)."""

from __future__ import annotations

from flows import ablation as flow
from trace_core.config import Params
from trace_core.data.mbeir import TEST_TASKS
from trace_core.evaluation import ablation


def _metrics(recall: float, reasoned: float, qps: float) -> dict:
    table = {t.stem: recall for t in TEST_TASKS} | {"average": recall, "n_tasks": 16}
    routing = {
        t.stem: {
            "direct_rate": 1 - reasoned,
            "reasoned_rate": reasoned,
            "forced_rate": 0.0,
            "n_queries": 10.0,
            "mean_new_tokens": 20 * reasoned,
            "qps": qps,
        }
        for t in TEST_TASKS
    }
    return {"local": {"table": table}, "routing": routing}


def _row(recall: float, reasoned: float, qps: float) -> dict:
    return ablation.summarise(_metrics(recall, reasoned, qps), {"query_qps": qps})


def test_summarise_weights_rates_by_queries() -> None:
    s = _row(0.5, 0.25, 40.0)
    assert s["average"] == 0.5 and s["routing"]["reasoned"] == 0.25 and s["routing"]["direct"] == 0.75
    assert s["mean_new_tokens"] == 5.0 and s["query_qps"] == 40.0
    assert set(s["tasks"]) == {t.stem for t in TEST_TASKS}


def test_report_states_measured_differences() -> None:
    rows = {
        "adaptive": _row(0.5, 0.25, 40.0),
        "never": _row(0.4, 0.0, 80.0),
        "no-chains": _row(0.3, 0.0, 80.0),
    }
    meta = {
        "git_commit": "0123456789abcdef",
        "profile": "mini",
        "experiments": {n: f"ablation-{n}" for n in rows},
        "mlflow": {n: "run" for n in rows},
        "descriptions": {n: n for n in rows},
        "overrides": {n: {} for n in rows},
        "tables": {"adaptive": "routing", "never": "routing", "no-chains": "control"},
    }
    text = ablation.report_markdown(rows, meta)
    assert "`never` vs `adaptive`: average 40.0 vs 50.0 (-10.0 points); query QPS 80.0 vs 40.0 (x2.00)" in text
    assert "`no-chains` vs `adaptive`: average 30.0 vs 50.0 (-20.0 points)" in text
    assert text.count("| adaptive |") == 2


def test_set_args_and_overrides() -> None:
    assert flow.set_args({"a.b": [], "c": 0.0, "d": "never"}) == ["-S", "a.b=[]", "-S", "c=0.0", "-S", "d=never"]
    p = flow.with_overrides(Params(), {"train.lambda_gen": 0.0, "cot_generate.routing.reason_datasets": []})
    assert p.train.lambda_gen == 0.0 and p.cot_generate.routing.reason_datasets == []
