"""Validation docs: a reason for every rule, GX notes, and the offline index."""

from __future__ import annotations

from pathlib import Path

from trace_core.data.validate import docs
from trace_core.data.validate.suite import RULES, make_expectation


def test_every_rule_has_a_reason_and_a_note() -> None:
    names = {r.name for r in RULES}
    missing = sorted(names - set(docs.RATIONALE))
    assert not missing, f"rules without a reason in trace_core/data/validate/docs.py RATIONALE: {missing}"
    assert not sorted(set(docs.RATIONALE) - names), "reasons for rules that do not exist"
    for rule in RULES:
        exp = make_expectation(rule)
        assert exp.notes.startswith("Checks that ") and " Why: " in exp.notes, rule.name
        assert exp.meta["rule"] == rule.name and exp.meta["why"] == docs.RATIONALE[rule.name]


def _summary(success: bool) -> dict:
    rows = [
        {
            "suite": "mbeir_queries",
            "rule": r.name,
            "column": str(r.column),
            "expectation": r.kind,
            "note": docs.note(r.name, r.description),
            "success": success or r.name != "positives_in_pool",
            "element_count": 10,
            "unexpected_count": 0 if success or r.name != "positives_in_pool" else 2,
        }
        for r in RULES
        if r.table == "queries"
    ]
    failures = [] if success else [{"rule": "positives_in_pool", "examples": ["q.jsonl:line 3 (0:3): <bad>"]}]
    return {
        "data_root": "/data",
        "success": success,
        "checks": len(RULES),
        "failed_checks": len(failures),
        "n_issues": 0,
        "found_test_tasks": ["mscoco_task0"],
        "counts": {"queries": 10, "candidates": 20},
        "failures": failures,
        "issues": [],
        "expectations": rows,
    }


def test_render_index_is_offline_and_lists_every_expectation() -> None:
    links = {"mbeir_queries": {"results": "data_docs/validations/x.html", "suite": "data_docs/expectations/y.html"}}
    page = docs.render_index(_summary(False), links)
    n_rules = sum(r.table == "queries" for r in RULES)
    assert page.count('<tr class="pass">') == n_rules - 1 and page.count('<tr class="fail">') == 1
    assert "q.jsonl:line 3 (0:3): &lt;bad&gt;" in page and "Why: " in page
    assert 'href="data_docs/validations/x.html"' in page and "<script" not in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_link_gx_index_once(tmp_path: Path) -> None:
    index = tmp_path / "index.html"
    index.write_text("<html><body><table></table></body></html>")
    docs.link_gx_index(index)
    docs.link_gx_index(index)
    text = index.read_text()
    assert text.count('href="../index.html"') == 1 and text.index("../index.html") < text.index("<table>")
