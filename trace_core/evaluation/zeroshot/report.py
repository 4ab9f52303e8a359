"""``metrics/zeroshot.json`` and ``reports/zeroshot.md``: the 13-column table and the per-task detail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trace_core.evaluation.zeroshot.base import ZsTask
from trace_core.evaluation.zeroshot.suite import COLUMNS, PAPER_TRACE, column_values

ROUTES = ("direct", "reasoned", "forced")


def collect_metrics(
    tasks: Sequence[ZsTask], per_task: Mapping[str, dict[str, float]], missing: Sequence[str], model_id: str | None
) -> dict[str, Any]:
    """The metrics object: columns (None = n/a), per-task metrics and routing, missing datasets.

    Only reproducible numbers: throughput goes to ``metrics/timings/evaluate_zeroshot.json``.
    """
    columns = column_values(tasks, per_task)
    return {
        "model_id": model_id,
        "columns": columns,
        "tasks": {t.name: per_task[t.name] for t in tasks if t.name in per_task},
        "missing": list(missing),
        "n_columns": sum(1 for v in columns.values() if v is not None),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def table_markdown(columns: Mapping[str, float | None]) -> str:
    """The 13 columns in the paper's order: this run, then the paper's TRACE numbers we know."""
    head = "| | " + " | ".join(c.label for c in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    ours = "| this run | " + " | ".join(_pct(columns.get(c.key)) for c in COLUMNS) + " |"
    paper = "| TRACE (paper) | " + " | ".join(
        f"{PAPER_TRACE[c.key]:.1f}" if c.key in PAPER_TRACE else "–" for c in COLUMNS
    )
    return "\n".join([head, rule, ours, paper + " |"])


def task_markdown(tasks: Mapping[str, Mapping[str, float]]) -> str:
    """One row per task: its metrics, sizes and routing."""
    lines = [
        "| task | metrics | queries | candidates | direct | reasoned | forced | tokens/query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in tasks.items():
        scores = ", ".join(
            f"{k} {100 * v:.1f}" for k, v in m.items() if k.startswith(("R@", "MAP@")) or k == "accuracy"
        )
        routes = " | ".join(f"{100 * m[f'{r}_rate']:.0f}%" for r in ROUTES)
        sizes = f"{m['n_queries']:.0f} | {m['n_candidates']:.0f}"
        lines.append(f"| {name} | {scores} | {sizes} | {routes} | {m['mean_new_tokens']:.1f} |")
    return "\n".join(lines)


def source_line(source: Mapping[str, Any]) -> str:
    """Which data the numbers come from (from the zero-shot root's manifest)."""
    if source.get("profile") == "mini":
        return "Data: **zero-shot-mini** (generated scenes in each dataset's real file format; not the real datasets)."
    if "zeroshot_from_dir" in source:
        return f"Data: real copies laid out from `{source['zeroshot_from_dir']}`."
    return "Data: no zero-shot data was laid out (set `download.zeroshot_from_dir`)."


def markdown(metrics: Mapping[str, Any], source: Mapping[str, Any], routing: str) -> str:
    """The whole ``reports/zeroshot.md``."""
    missing = metrics["missing"]
    note = f" Missing (n/a): {', '.join(missing)}." if missing else ""
    return (
        f"# Zero-shot results (model {metrics.get('model_id')})\n\n"
        f"{source_line(source)} In %: R@1, except CIRCO (mAP@5), MT-FashionIQ (R@5), CC-Neg and "
        f"Sugar-Crepe (accuracy); GeneCIS and Sugar-Crepe average their subsets. Query routing: "
        f"{routing}.{note}\n\n{table_markdown(metrics['columns'])}\n\n## Per task\n\n"
        f"{task_markdown(metrics['tasks'])}\n\nQuery-encoding throughput: `metrics/timings/evaluate_zeroshot.json` "
        "and the MLflow run.\n"
    )
