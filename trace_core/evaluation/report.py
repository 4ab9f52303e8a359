"""Human-facing outputs of evaluate: markdown table, plot data (CSV) and PNG plots, MLflow."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from trace_core.config import Params
from trace_core.data.mbeir import TEST_TASKS
from trace_core.flatten import numeric_leaves
from trace_core.io import atomic_open, write_text

log = logging.getLogger(__name__)
ROUTES = ("direct", "reasoned", "forced")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


APPROX = "†"


def table_markdown(metrics: dict[str, Any], scopes: list[str]) -> str:
    """The 16-column table (one row per scope) with the average column.

    A number that came from an approximate index is marked with ``†`` (and so is an average
    over any such number); :func:`index_notes` says which index and settings.
    """
    head = [t.label for t in TEST_TASKS] + ["average"]
    lines = ["| pool | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for scope in scopes:
        table = metrics[scope]["table"]
        approx = set(metrics[scope].get("approximate", []))
        cells = [_pct(table.get(t.stem)) + (APPROX if t.stem in approx else "") for t in TEST_TASKS]
        cells.append(_pct(table["average"]) + (APPROX if approx else ""))
        lines.append(f"| {scope} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spec_text(spec: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("backend", "index_type", "exact"))
    return f"{spec.get('backend')} {spec.get('index_type')}" + (f" ({settings})" if settings else "")


def index_notes(metrics: dict[str, Any], scopes: list[str]) -> str:
    """One line per scope: the index its numbers came from, exact or approximate."""
    lines = []
    for scope in scopes:
        specs = metrics[scope].get("index", {})
        kinds = sorted({_spec_text(spec) for spec in specs.values()})
        approx = metrics[scope].get("approximate", [])
        exactness = (
            f"{APPROX} approximate search on {len(approx)} of {len(specs)} tasks (not the exhaustive search of the "
            "M-BEIR protocol)"
            if approx
            else "exact search (the protocol's exhaustive search)"
        )
        lines.append(f"- {scope}: {'; '.join(kinds) or 'unknown index'}: {exactness}.")
    return "\n".join(lines)


def task_markdown(metrics: dict[str, Any], scopes: list[str]) -> str:
    """Per-task recalls, routing rates and generated tokens (throughput: ``metrics/timings/``)."""
    head = "| # | task | metric | " + " | ".join(scopes) + " | R@1 local | direct | reasoned | forced | tokens/query |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for t in TEST_TASKS:
        if t.stem not in metrics["local"]["tasks"]:
            continue
        metric = f"R@{t.reported_k}"
        vals = " | ".join(_pct(metrics[s]["tasks"][t.stem][metric]) for s in scopes)
        r = metrics["routing"][t.stem]
        routes = " | ".join(f"{100 * r[f'{x}_rate']:.0f}%" for x in ROUTES)
        r1 = _pct(metrics["local"]["tasks"][t.stem].get("R@1"))
        tail = f"{r['mean_new_tokens']:.1f}"
        lines.append(f"| {t.column} | {t.label} | {metric} | {vals} | {r1} | {routes} | {tail} |")
    return "\n".join(lines)


def markdown(metrics: dict[str, Any]) -> str:
    """The whole ``reports/mbeir.md``."""
    scopes: list[str] = [s for s in ("local", "union") if s in metrics]
    n = metrics["local"]["table"]["n_tasks"]
    note = (
        ""
        if n == len(TEST_TASKS)
        else f" Only {n} of {len(TEST_TASKS)} tasks are present; the average is over those {n}."
    )
    return (
        f"# M-BEIR results (model {metrics.get('model_id')})\n\n"
        f"R@5 (R@10 for Fashion200K and FashionIQ), in %; UniIR hit semantics.{note}\n\n"
        f"{table_markdown(metrics, scopes)}\n\nIndexes:\n{index_notes(metrics, scopes)}\n\n"
        f"## Per task\n\n{task_markdown(metrics, scopes)}\n\n"
        "Throughput (query-encoding and search QPS) is run-specific, so it is kept out of this report: "
        "`metrics/timings/evaluate.json` and the MLflow run.\n"
    )


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_open(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def plot_rows(metrics: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows of ``per_task.csv`` (task, scope, recall) and ``routing.csv`` (task, rates)."""
    scopes = [s for s in ("local", "union") if s in metrics]
    per_task: list[list[Any]] = []
    routing: list[list[Any]] = []
    for t in TEST_TASKS:
        if t.stem not in metrics["local"]["tasks"]:
            continue
        per_task.extend([t.stem, s, round(metrics[s]["table"][t.stem], 6)] for s in scopes)
        r = metrics["routing"][t.stem]
        routing.append([t.stem, *(round(r[f"{x}_rate"], 6) for x in ROUTES)])
    return per_task, routing


def write_plots(per_task: list[list[Any]], routing: list[list[Any]], out: Path) -> list[Path]:
    """PNG bar charts of the reported recall per task and of the routing rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [r[0] for r in routing]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(tasks) + 2), 4))
    scopes = sorted({r[1] for r in per_task}, key=["local", "union"].index)
    width = 0.8 / max(len(scopes), 1)
    for i, scope in enumerate(scopes):
        vals = [r[2] for r in per_task if r[1] == scope]
        ax.bar([j + i * width for j in range(len(tasks))], vals, width, label=scope)
    ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right")
    ax.set_ylabel("reported recall")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_task.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(tasks) + 2), 4))
    bottom = [0.0] * len(tasks)
    for k, route in enumerate(ROUTES):
        vals = [r[1 + k] for r in routing]
        ax.bar(range(len(tasks)), vals, 0.7, bottom=bottom, label=route)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right")
    ax.set_ylabel("fraction of queries")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "routing.png", dpi=100)
    plt.close(fig)
    return [out / "per_task.png", out / "routing.png"]


def write_reports(metrics: dict[str, Any], reports_dir: Path) -> list[Path]:
    """Write ``mbeir.md``, ``plots/per_task.csv``, ``plots/routing.csv`` and the PNGs."""
    plots = reports_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    write_text(reports_dir / "mbeir.md", markdown(metrics))
    per_task, routing = plot_rows(metrics)
    _write_csv(plots / "per_task.csv", ["task", "pool", "recall"], per_task)
    _write_csv(plots / "routing.csv", ["task", *ROUTES], routing)
    pngs = write_plots(per_task, routing, plots) if routing else []
    return [reports_dir / "mbeir.md", plots / "per_task.csv", plots / "routing.csv", *pngs]


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics flattened for MLflow (``local.table.average``, ``routing.<task>.direct_rate``...)."""
    return numeric_leaves({k: v for k, v in metrics.items() if k in ("local", "union", "routing")})


def log_to_tracking(
    params: Params, metrics: dict[str, Any], files: list[Path], timings: dict[str, Any] | None = None
) -> None:
    """Log metrics, report, plots and run files to the active ``evaluate`` run; promote the model.

    The run is opened by the caller (the CLI's ``track_stage`` or a flow); without one, the
    logging calls are no-ops and only the promotion decision is made.
    """
    if not params.tracking.enabled:
        return
    from trace_core import tracking

    model_run = tracking.find_model_run(params)
    tracking.set_tags({"trace.model_run_id": model_run or "", "trace.model_id": metrics.get("model_id") or ""})
    tracking.log_metrics(flat_metrics(metrics))
    tracking.log_metrics(numeric_leaves({"timings": timings or {}}))
    for path in files:
        tracking.log_artifact(path, "evaluation")
    tracking.promote_model(params, metrics.get("model_id"), metrics["local"]["table"].get("average"))
    log.info("evaluation logged to MLflow (model run %s)", model_run)
