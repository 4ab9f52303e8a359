"""Ablation report (pure): summarise each variant's M-BEIR metrics and write the tables.

The variants are run by :mod:`flows.ablation` (DVC experiments); this module turns their
``metrics/mbeir.json`` files into the rows of the paper's Tables 2 and 5 in miniature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trace_core.data.mbeir import TEST_TASKS

ROUTES = ("direct", "reasoned", "forced")


def summarise(metrics: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of the ablation tables, from ``metrics/mbeir.json`` and ``metrics/timings/evaluate.json``."""
    table = metrics["local"]["table"]
    routing = metrics.get("routing", {})
    n = sum(r.get("n_queries", 0.0) for r in routing.values()) or 1.0
    rates = {
        route: sum(r.get(f"{route}_rate", 0.0) * r.get("n_queries", 0.0) for r in routing.values()) / n
        for route in ROUTES
    }
    tokens = sum(r.get("mean_new_tokens", 0.0) * r.get("n_queries", 0.0) for r in routing.values()) / n
    return {
        "tasks": {t.stem: table.get(t.stem) for t in TEST_TASKS},
        "average": table.get("average"),
        "routing": rates,
        "reasoned_by_task": {stem: r.get("reasoned_rate", 0.0) for stem, r in routing.items()},
        "mean_new_tokens": tokens,
        "query_qps": (timings or {}).get("query_qps"),
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def routing_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Table 2 in miniature: per-task reported recall, average, routing rates and QPS."""
    head = ["variant", *[t.label for t in TEST_TASKS], "avg", "reasoned %", "forced %", "tokens/q", "query QPS"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, s in rows.items():
        cells = [_pct(s["tasks"].get(t.stem)) for t in TEST_TASKS]
        qps = s["query_qps"]
        tail = [_pct(s["average"]), _pct(s["routing"]["reasoned"]), _pct(s["routing"]["forced"])]
        tail += [f"{s['mean_new_tokens']:.1f}", "–" if qps is None else f"{qps:.1f}"]
        lines.append("| " + " | ".join([name, *cells, *tail]) + " |")
    return "\n".join(lines)


def deltas(rows: Mapping[str, Mapping[str, Any]], base: str) -> list[str]:
    """Plain statements of each variant's average and QPS relative to ``base``."""
    if base not in rows or rows[base]["average"] is None:
        return []
    ref = rows[base]
    out = []
    for name, s in rows.items():
        if name == base or s["average"] is None:
            continue
        diff = 100 * (s["average"] - ref["average"])
        line = f"- `{name}` vs `{base}`: average {_pct(s['average'])} vs {_pct(ref['average'])} ({diff:+.1f} points)"
        if s["query_qps"] and ref["query_qps"]:
            line += (
                f"; query QPS {s['query_qps']:.1f} vs {ref['query_qps']:.1f} (x{s['query_qps'] / ref['query_qps']:.2f})"
            )
        out.append(line + ".")
    return out


def report_markdown(rows: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The whole ``reports/ablation.md``."""
    routing = {n: s for n, s in rows.items() if meta["tables"].get(n) == "routing"}
    control = {n: s for n, s in rows.items() if n == "adaptive" or meta["tables"].get(n) == "control"}
    parts = [
        "# Ablation on M-BEIR-mini",
        "",
        f"Real runs of this repository (git `{meta['git_commit'][:12]}`, {meta['profile']} profile); numbers as "
        "measured, local pools, reported recall per column (R@5; R@10 for Fashion200K/FashionIQ), in %. "
        f"Query QPS is wall-clock query encoding on this machine ({meta.get('cpus', '?')} CPU cores, shared with "
        "whatever else ran), so treat small QPS differences as noise.",
        "",
        "## Routing modes on the same checkpoint (paper Table 2)",
        "",
        routing_table(routing),
        "",
        *deltas(routing, "adaptive"),
        "",
        "## Training without chains (paper Table 5)",
        "",
        routing_table(control),
        "",
        *deltas(control, "adaptive"),
        "",
        "## Variants",
        "",
        *[
            f"- `{n}` (DVC experiment `{meta['experiments'][n]}`, MLflow run `{meta['mlflow'].get(n, '')}`): "
            f"{meta['descriptions'][n]}; overrides `{json.dumps(meta['overrides'][n])}`"
            for n in rows
        ],
        "",
        "Reproduce: `make ablation`; compare: `dvc exp show`, `dvc metrics diff`, the MLflow UI (`make mlflow-ui`).",
        "",
    ]
    return "\n".join(parts)
