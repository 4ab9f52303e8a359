"""Ablation summary on constructed metrics (the numbers are known by construction)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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


def _meta(rows: dict, tables: dict[str, str]) -> dict:
    """The run metadata ``report_markdown`` reads, for constructed rows."""
    return {
        "git_commit": "0123456789abcdef",
        "profile": "mini",
        "experiments": {n: f"ablation-{n}" for n in rows},
        "mlflow": {n: "run" for n in rows},
        "descriptions": {n: n for n in rows},
        "overrides": {n: {} for n in rows},
        "tables": tables,
    }


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
    meta = _meta(rows, {"adaptive": "routing", "never": "routing", "no-chains": "control"})
    text = ablation.report_markdown(rows, meta)
    assert "`never` vs `adaptive`: average 40.0 vs 50.0 (-10.0 points); query QPS 80.0 vs 40.0 (x2.00)" in text
    assert "`no-chains` vs `adaptive`: average 30.0 vs 50.0 (-20.0 points)" in text
    assert text.count("| adaptive |") == 2


def test_set_args_and_overrides() -> None:
    assert flow.set_args({"a.b": [], "c": 0.0, "d": "never"}) == ["-S", "a.b=[]", "-S", "c=0.0", "-S", "d=never"]
    p = flow.with_overrides(Params(), {"train.lambda_gen": 0.0, "cot_generate.routing.reason_datasets": []})
    assert p.train.lambda_gen == 0.0 and p.cot_generate.routing.reason_datasets == []


# --- paired bootstrap on constructed per-query results ---------------------------------------
STEMS = [t.stem for t in TEST_TASKS[:2]]


def _idx(n: int = 64, n_boot: int = 2000) -> dict:
    return ablation.bootstrap_indices(dict.fromkeys(STEMS, n), n_boot, seed=1)


def test_identical_variants_differ_by_exactly_zero() -> None:
    hits = {s: [float(i % 3 == 0) for i in range(64)] for s in STEMS}
    diff = ablation.paired_differences(hits, hits, _idx())
    assert all(iv.value == iv.low == iv.high == 0.0 and not iv.significant for iv in diff.values())


def test_pairing_detects_a_small_consistent_gain() -> None:
    """b = a with 8 of 64 hits removed: +12.5 points in every resample that draws one of them."""
    a = {s: [float(i % 2 == 0) for i in range(64)] for s in STEMS}
    b = {s: [0.0 if i < 16 else h for i, h in enumerate(a[s])] for s in STEMS}
    diff = ablation.paired_differences(a, b, _idx())
    first = diff[STEMS[0]]
    assert first.value == 0.125 and first.significant and first.high - first.low < 0.2
    assert diff["average"].value == 0.125 and diff["average"].significant
    # each variant alone is far less certain: its own interval is wider than the paired difference's
    alone = ablation.recall_intervals(a, _idx())[STEMS[0]]
    assert alone.value == 0.5 and alone.high - alone.low > first.high - first.low
    assert abs((alone.high - alone.low) - 2 * 1.96 * ablation.standard_error(0.5, 64)) < 0.03


def test_noise_is_not_significant() -> None:
    """Two variants that swap hits on different queries (same totals) are not called different."""
    a = {s: [float(i % 2 == 0) for i in range(64)] for s in STEMS}
    b = {s: [float(i % 2 == 1) for i in range(64)] for s in STEMS}
    diff = ablation.paired_differences(a, b, _idx())
    assert diff["average"].value == 0.0 and not diff["average"].significant
    assert diff["average"].low < 0 < diff["average"].high


def test_statistics_share_one_resample_and_name_the_comparisons() -> None:
    base = {s: [1.0] * 10 + [0.0] * 54 for s in STEMS}
    never = {s: [0.0] * 64 for s in STEMS}
    intervals, diffs = ablation.statistics({"adaptive": base, "never": never}, "adaptive", n_boot=500)
    assert set(intervals) == {"adaptive", "never"} and list(diffs) == ["adaptive - never"]
    assert intervals["never"]["average"].high == 0.0
    text = ablation.significance_markdown(diffs, 500, 0.95)
    assert "**+15.6 [" in text and "- adaptive - never: average +15.6 points" in text and ": significant;" in text
    with pytest.raises(ValueError, match="64 vs 63 queries"):
        ablation.paired_differences(base, {s: [0.0] * 63 for s in STEMS}, _idx())


def test_task_hits_from_rankings() -> None:
    rankings = {"q1": ["d9", "d1"], "q2": ["d5", "d6", "d7"]}
    qrels = {"t": {"q2": frozenset({"d7"}), "q1": frozenset({"d1"}), "q3": frozenset({"d3"})}}
    assert ablation.task_hits(rankings, qrels, {"t": 2}) == {"t": [1.0, 0.0, 0.0]}  # q1, q2, q3; q3 absent = miss


def test_report_has_the_significance_section() -> None:
    rows = {"adaptive": ablation.summarise(_metrics(0.5, 0.25, 40.0))}
    meta = {
        "git_commit": "0123456789abcdef",
        "profile": "mini",
        "experiments": {"adaptive": "ablation-adaptive"},
        "mlflow": {"adaptive": "run"},
        "descriptions": {"adaptive": "a"},
        "overrides": {"adaptive": {}},
        "tables": {"adaptive": "routing"},
    }
    assert "## Which differences are significant" not in ablation.report_markdown(rows, meta)
    text = ablation.report_markdown(rows, meta, "TABLE")
    assert "## Which differences are significant\n\nTABLE" in text and "ablation.png" in text


def test_flow_statistics_write_the_plot(tmp_path: Path) -> None:
    hits = {
        "adaptive": {t.stem: [1.0] * 20 + [0.0] * 44 for t in TEST_TASKS},
        "never": {t.stem: [1.0] * 10 + [0.0] * 54 for t in TEST_TASKS},
    }
    text, stats = flow.write_statistics(hits, tmp_path, n_boot=200)
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert "adaptive - never" in text and stats["differences"]["adaptive - never"]["average"]["value"] == 10 / 64


# --- self-chain rows: compared with adaptive and with their references -----------------------------
def test_reference_pairs_keep_only_variants_that_ran() -> None:
    refs = {"self-chains": ("no-chains", "gold-continue"), "gold-continue": ("no-chains",), "never": ()}
    names = ["adaptive", "never", "self-chains", "gold-continue"]  # no-chains did not run
    assert ablation.reference_pairs(names, refs) == [("self-chains", "gold-continue")]
    names.append("no-chains")
    assert ablation.reference_pairs(names, refs) == [
        ("self-chains", "no-chains"),
        ("self-chains", "gold-continue"),
        ("gold-continue", "no-chains"),
    ]


def test_statistics_add_the_reference_comparisons_on_the_shared_resample() -> None:
    hits = {
        "adaptive": {s: [1.0] * 20 + [0.0] * 44 for s in STEMS},
        "self-chains": {s: [1.0] * 24 + [0.0] * 40 for s in STEMS},
        "no-chains": {s: [1.0] * 8 + [0.0] * 56 for s in STEMS},
    }
    pairs = [("self-chains", "no-chains")]
    _, diffs = ablation.statistics(hits, "adaptive", n_boot=300, pairs=pairs)
    assert list(diffs) == ["adaptive - self-chains", "adaptive - no-chains", "self-chains - no-chains"]
    assert diffs["self-chains - no-chains"]["average"].value == 16 / 64
    assert diffs["self-chains - no-chains"]["average"].significant
    assert diffs["adaptive - self-chains"]["average"].value == -4 / 64


def test_flow_variants_self_chain_rows_and_statistics(tmp_path: Path) -> None:
    by_name = {v.name: v for v in flow.VARIANTS}
    assert {"self-chains", "self-chains+reward", "gold-continue"} <= set(by_name)
    for name in ("self-chains", "self-chains+reward", "gold-continue"):
        v = by_name[name]
        p = flow.with_overrides(Params(), v.overrides)
        assert p.self_chain.enabled and not p.tracking.promote and v.force_from is None and v.table == "self_chain"
        assert p.train == Params().train and p.model == Params().model  # phase 1 is the cached baseline
        assert "no-chains" in v.references and "self_chain.epochs" in v.description
    assert flow.with_overrides(Params(), by_name["self-chains+reward"].overrides).self_chain.reward
    assert flow.with_overrides(Params(), by_name["gold-continue"].overrides).self_chain.own_fraction == 0.0
    hits = {
        name: {t.stem: [1.0] * k + [0.0] * (64 - k) for t in TEST_TASKS}
        for name, k in (("adaptive", 20), ("self-chains", 22), ("gold-continue", 21), ("no-chains", 10))
    }
    text, stats = flow.write_statistics(hits, tmp_path, n_boot=100)
    assert {"self-chains - no-chains", "self-chains - gold-continue", "gold-continue - no-chains"} <= set(
        stats["differences"]
    )
    assert "- self-chains - no-chains: average +18.8 points" in text


def test_report_has_the_self_chain_section() -> None:
    rows = {n: _row(r, 0.25, 40.0) for n, r in (("adaptive", 0.5), ("self-chains", 0.55), ("no-chains", 0.3))}
    meta = _meta(rows, {"adaptive": "routing", "self-chains": "self_chain", "no-chains": "control"})
    text = ablation.report_markdown(rows, meta)
    section = text.split("## Training on the model's own chains (beyond the paper)")[1].split("##")[0]
    assert "| self-chains |" in section and "| no-chains |" in section and "| adaptive |" in section
    assert "`self-chains` vs `adaptive`: average 55.0 vs 50.0 (+5.0 points)" in section
    assert "`self-chains` vs `no-chains`: average 55.0 vs 30.0 (+25.0 points)" in section
    without = {n: s for n, s in rows.items() if n != "self-chains"}
    assert "own chains" not in ablation.report_markdown(without, meta)


def test_each_variant_starts_from_the_baseline_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc exp run -S` leaves its params in the workspace: the next variant must not inherit them."""
    from trace_core.config import dump_params, load_params

    monkeypatch.chdir(tmp_path)
    baseline = yaml.safe_dump(dump_params(Params()))
    (tmp_path / "params.yaml").write_text(baseline)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    seen: dict[str, Params] = {}

    def fake_run_variant(variant, params, root):  # type: ignore[no-untyped-def]
        path = root / "params.yaml"
        seen[variant.name] = load_params(path)  # what `dvc exp run -S` would apply its overrides to
        path.write_text(yaml.safe_dump(dump_params(flow.with_overrides(load_params(path), variant.overrides))))
        return _row(0.5, 0.2, 40.0), f"ablation-{variant.name}", "run"

    monkeypatch.setattr(flow, "run_variant", fake_run_variant)
    monkeypatch.setattr(flow, "variant_hits", lambda params, root: {})
    monkeypatch.setattr(flow, "run_dvc", lambda *a, **k: 0)
    monkeypatch.setattr(flow, "_log_summary", lambda *a, **k: None)
    flow.run(tmp_path / "params.yaml", ["always", "self-chains", "no-chains"])
    assert set(seen) == {"always", "self-chains", "no-chains"}
    assert all(p == Params() for p in seen.values())  # never "always" routing or phase 2 carried over
    assert (tmp_path / "params.yaml").read_text() == baseline
