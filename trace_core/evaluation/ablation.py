"""Ablation report (pure): summarise each variant's M-BEIR metrics and write the tables.

The variants are run by :mod:`flows.ablation` (DVC experiments); this module turns their
``metrics/mbeir.json`` files into the rows of the paper's Tables 2 and 5 in miniature, and
their per-query hits (from the run files) into paired bootstrap intervals: queries are
resampled within each task, the same resample for every variant, and a difference is called
significant when its 95 % interval excludes zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np

from trace_core.data.mbeir import TEST_TASKS
from trace_core.evaluation.metrics import hit_at_k

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


def report_markdown(
    rows: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any], significance: str | None = None
) -> str:
    """The whole ``reports/ablation.md`` (with the bootstrap section when ``significance`` is given)."""
    routing = {n: s for n, s in rows.items() if meta["tables"].get(n) == "routing"}
    control = {n: s for n, s in rows.items() if n == "adaptive" or meta["tables"].get(n) == "control"}
    self_chain = {
        n: s for n, s in rows.items() if n in ("adaptive", "no-chains") or meta["tables"].get(n) == "self_chain"
    }
    self_section = (
        [
            "## Training on the model's own chains (beyond the paper)",
            "",
            routing_table(self_chain),
            "",
            *deltas(self_chain, "adaptive"),
            *deltas({n: s for n, s in self_chain.items() if n != "adaptive"}, "no-chains"),
            "",
        ]
        if any(meta["tables"].get(n) == "self_chain" for n in rows)
        else []
    )
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
        *self_section,
        *(
            ["## Which differences are significant", "", significance, "", "![ablation](ablation.png)", ""]
            if significance
            else []
        ),
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


# --- statistics: paired bootstrap over queries --------------------------------------------------
#: per task, the per-query hits (1.0/0.0 at the task's reported k) in one fixed qid order.
TaskHits = Mapping[str, Sequence[float]]
AVERAGE = "average"


@dataclass(frozen=True)
class Interval:
    """A point estimate (in recall units, 0..1) with its bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero (meaningful for differences)."""
        return self.low > 0 or self.high < 0


def bootstrap_indices(sizes: Mapping[str, int], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """One resample of query positions per task and bootstrap round, shared by every variant.

    Returns ``task -> (n_boot, n_queries)`` integer arrays; the same arrays applied to every
    variant make the comparisons paired (a resample drops and repeats the same queries everywhere).
    """
    rng = np.random.default_rng(seed)
    return {task: rng.integers(0, n, size=(n_boot, n)) for task, n in sorted(sizes.items()) if n > 0}


def _resampled_means(hits: TaskHits, idx: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per task, the mean hit of each bootstrap round ``(n_boot,)``, plus their plain average."""
    out = {task: np.asarray(hits[task], dtype=float)[i].mean(axis=1) for task, i in idx.items()}
    out[AVERAGE] = np.mean(np.stack([out[t] for t in idx]), axis=0)
    return out


def _interval(point: float, rounds: np.ndarray, level: float) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rounds, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def _point(hits: TaskHits, tasks: Sequence[str]) -> dict[str, float]:
    means = {t: float(np.mean(hits[t])) for t in tasks}
    means[AVERAGE] = float(np.mean([means[t] for t in tasks]))
    return means


def recall_intervals(hits: TaskHits, idx: Mapping[str, np.ndarray], level: float = 0.95) -> dict[str, Interval]:
    """Each task's recall (and the average over tasks) with its percentile bootstrap interval."""
    rounds, point = _resampled_means(hits, idx), _point(hits, list(idx))
    return {k: _interval(point[k], rounds[k], level) for k in point}


def paired_differences(
    a: TaskHits, b: TaskHits, idx: Mapping[str, np.ndarray], level: float = 0.95
) -> dict[str, Interval]:
    """``a - b`` per task and for the average, with paired percentile bootstrap intervals.

    ``a`` and ``b`` must hold the same queries in the same order for every task in ``idx``.

    Raises:
        ValueError: naming a task whose query counts differ between ``a`` and ``b``.
    """
    for task in idx:
        if len(a[task]) != len(b[task]):
            raise ValueError(f"task {task}: {len(a[task])} vs {len(b[task])} queries; a paired comparison needs both")
    ra, rb = _resampled_means(a, idx), _resampled_means(b, idx)
    pa, pb = _point(a, list(idx)), _point(b, list(idx))
    return {k: _interval(pa[k] - pb[k], ra[k] - rb[k], level) for k in pa}


def standard_error(p: float, n: int) -> float:
    """Standard error of a hit rate ``p`` over ``n`` queries: ``sqrt(p (1 - p) / n)``."""
    return float(np.sqrt(p * (1 - p) / n)) if n > 0 else float("nan")


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def difference_cell(iv: Interval) -> str:
    """``+3.1 [-1.2, +7.4]`` in points, bold when the interval excludes zero."""
    text = f"{_signed(iv.value)} [{_signed(iv.low)}, {_signed(iv.high)}]"
    return f"**{text}**" if iv.significant else text


def significance_markdown(comparisons: Mapping[str, Mapping[str, Interval]], n_boot: int, level: float) -> str:
    """Table (rows: tasks and the average; columns: comparisons) and one verdict line per comparison."""
    names = list(comparisons)
    head = ["task", *names]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    labels = {t.stem: t.label for t in TEST_TASKS}
    keys = [t.stem for t in TEST_TASKS if all(t.stem in c for c in comparisons.values())] + [AVERAGE]
    for key in keys:
        cells = [difference_cell(comparisons[n][key]) for n in names]
        lines.append(f"| {labels.get(key, '**average**')} | " + " | ".join(cells) + " |")
    verdicts = []
    for name, c in comparisons.items():
        avg = c[AVERAGE]
        sig = [labels[k] for k in keys[:-1] if c[k].significant]
        word = "significant" if avg.significant else "not significant"
        verdicts.append(
            f"- {name}: average {_signed(avg.value)} points, {int(100 * level)} % interval "
            f"[{_signed(avg.low)}, {_signed(avg.high)}]: {word}; tasks whose interval excludes 0: "
            + (", ".join(sig) if sig else "none")
            + "."
        )
    note = (
        f"Paired bootstrap over test queries ({n_boot} resamples; within each task the same resampled "
        "queries for every variant; the average is the mean of the 16 resampled task recalls). "
        "Differences in points, bold when the interval excludes zero."
    )
    return "\n".join([note, "", *lines, "", *verdicts])


def task_hits(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, AbstractSet[str]]], ks: Mapping[str, int]
) -> dict[str, list[float]]:
    """Per task, the hit (1.0/0.0) at the task's reported k of every qrels query, in sorted qid order.

    Args:
        rankings: ``qid -> ranked dids`` of one variant's run file (a missing qid is a miss).
        qrels: ``task -> qid -> positives``.
        ks: ``task -> reported k``.
    """
    return {task: [hit_at_k(rankings.get(q, ()), pos[q], ks[task]) for q in sorted(pos)] for task, pos in qrels.items()}


def reference_pairs(names: Sequence[str], references: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """``(variant, reference)`` pairs to compare beyond the base: each variant's references that were run.

    Args:
        names: the variants that have per-query hits, in order.
        references: variant -> the variants it is measured against (e.g. the self-chain rows
            against the no-chain control and the steps-matched gold-chain continuation).
    """
    present = set(names)
    return [(n, ref) for n in names for ref in references.get(n, ()) if ref in present and ref != n]


def statistics(
    hits: Mapping[str, TaskHits],
    base: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    pairs: Sequence[tuple[str, str]] = (),
) -> tuple[dict[str, dict[str, Interval]], dict[str, dict[str, Interval]]]:
    """Per-variant recall intervals, ``base`` minus each other variant and each ``a - b`` of ``pairs``.

    Every comparison uses one shared resample (so all are paired, the extra pairs included).

    Returns:
        ``(intervals, differences)``: ``variant -> task|"average" -> Interval`` and
        ``"<a> - <b>" -> task|"average" -> Interval`` (the base comparisons first).
    """
    if base not in hits:
        raise ValueError(f"no per-query hits of the base variant {base!r}")
    sizes = {task: len(h) for task, h in hits[base].items()}
    idx = bootstrap_indices(sizes, n_boot, seed)
    intervals = {name: recall_intervals(h, idx, level) for name, h in hits.items()}
    others = [(base, name) for name in hits if name != base]
    diffs = {f"{a} - {b}": paired_differences(hits[a], hits[b], idx, level) for a, b in [*others, *pairs]}
    return intervals, diffs
