"""Human-facing outputs of evaluate: markdown table, plot data (CSV) and PNG plots, MLflow."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from trace_core.config import Params
from trace_core.data.mbeir import TEST_TASKS, TestTask
from trace_core.evaluation.mbeir import reported_metric
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
    """Per-task recalls, chance level (random ranking of the local pool), routing rates and generated tokens.

    Throughput is in ``metrics/timings/``.
    """
    head = (
        "| # | task | metric | "
        + " | ".join(scopes)
        + " | chance local | R@1 local | direct | reasoned | forced | tokens/query |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for t in TEST_TASKS:
        if t.stem not in metrics["local"]["tasks"]:
            continue
        metric = f"R@{t.reported_k}"
        vals = " | ".join(_pct(metrics[s]["tasks"][t.stem][metric]) for s in scopes)
        r = metrics["routing"][t.stem]
        routes = " | ".join(f"{100 * r[f'{x}_rate']:.0f}%" for x in ROUTES)
        r1 = _pct(metrics["local"]["tasks"][t.stem].get("R@1"))
        chance = _pct(metrics["local"]["tasks"][t.stem].get("chance"))
        tail = f"{r['mean_new_tokens']:.1f}"
        lines.append(f"| {t.column} | {t.label} | {metric} | {vals} | {chance} | {r1} | {routes} | {tail} |")
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


def metric_slug(task: TestTask) -> str:
    """The task's MLflow metric name: column, modalities and dataset, e.g. ``03_qt-ci_Fashion200K``.

    ``(qi,qt)->(ci,ct) OVEN`` becomes ``15_qi.qt-ci.ct_OVEN`` (MLflow names allow no brackets or commas).
    """
    mods = task.label.split(" ", 1)[0].replace("->", "-").replace("(", "").replace(")", "").replace(",", ".")
    return f"{task.column:02d}_{mods}_{task.dataset}"


def headline_metrics(metrics: dict[str, Any], timings: dict[str, Any] | None = None) -> dict[str, float]:
    """The table in % as MLflow metrics: ``mbeir/<scope>/avg`` and ``mbeir/<scope>/tasks/<NN_task>``.

    The columns sit under ``tasks/`` so that MLflow, which sorts metric names, lists the average
    first (in the compare view's table and as its plots' default metric).
    """
    out: dict[str, float] = {}
    for scope in (s for s in ("local", "union") if s in metrics):
        table = metrics[scope]["table"]
        if table.get("average") is not None:
            out[f"mbeir/{scope}/avg"] = round(100 * table["average"], 4)
        for t in TEST_TASKS:
            if table.get(t.stem) is not None:
                out[f"mbeir/{scope}/tasks/{metric_slug(t)}"] = round(100 * table[t.stem], 4)
    for key in ("query_qps", "search_qps"):
        if (timings or {}).get(key):
            out[f"mbeir/{key}"] = round(float((timings or {})[key]), 4)
    return out


def plot_rows(metrics: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows of ``per_task.csv`` (task label, pool, metric, recall %, chance %) and ``routing.csv`` (route %)."""
    scopes = [s for s in ("local", "union") if s in metrics]
    per_task: list[list[Any]] = []
    routing: list[list[Any]] = []
    for t in TEST_TASKS:
        if t.stem not in metrics["local"]["tasks"]:
            continue
        for s in scopes:
            chance = metrics[s]["tasks"][t.stem].get("chance")
            pct = None if chance is None else round(100 * chance, 4)
            per_task.append([t.label, s, reported_metric(t), round(100 * metrics[s]["table"][t.stem], 4), pct])
        r = metrics["routing"][t.stem]
        routing.append([t.label, *(round(100 * r[f"{x}_rate"], 4) for x in ROUTES)])
    return per_task, routing


def write_plots(per_task: list[list[Any]], routing: list[list[Any]], out: Path) -> list[Path]:
    """``per_task.png`` (reported recall per task and pool, averages, chance) and ``routing.png``."""
    from trace_core.plots import Series, grouped_bars, stacked_bars

    labels = [r[0] for r in routing]
    scopes = sorted({r[1] for r in per_task}, key=["local", "union"].index)
    series = [Series(f"{s} pool", [r[3] for r in per_task if r[1] == s]) for s in scopes]
    chance = [r[4] for r in per_task if r[1] == "local"]
    files = [
        grouped_bars(
            labels,
            series,
            out / "per_task.png",
            title="M-BEIR test: reported recall per task (R@5; R@10 for Fashion200K and FashionIQ)",
            ylabel="reported recall R@5 / R@10 (%)",
            chance=chance if all(c is not None for c in chance) else None,
        )
    ]
    parts = {route: [r[1 + k] for r in routing] for k, route in enumerate(ROUTES)}
    files.append(
        stacked_bars(
            labels,
            parts,
            out / "routing.png",
            title="Query routing per task: direct embedding, reasoned (chain, then <|emb|>), forced chain",
            ylabel="share of test queries (%)",
        )
    )
    return files


def write_reports(metrics: dict[str, Any], reports_dir: Path) -> list[Path]:
    """Write ``mbeir.md``, ``plots/per_task.csv``, ``plots/routing.csv`` and the PNGs."""
    plots = reports_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    write_text(reports_dir / "mbeir.md", markdown(metrics))
    per_task, routing = plot_rows(metrics)
    _write_csv(plots / "per_task.csv", ["task", "pool", "metric", "recall_pct", "chance_pct"], per_task)
    _write_csv(plots / "routing.csv", ["task", *(f"{r}_pct" for r in ROUTES)], routing)
    pngs = write_plots(per_task, routing, plots) if routing else []
    return [reports_dir / "mbeir.md", plots / "per_task.csv", plots / "routing.csv", *pngs]


def log_to_tracking(
    params: Params, metrics: dict[str, Any], files: list[Path], timings: dict[str, Any] | None = None
) -> None:
    """Log headline metrics, timings, report, plots and run files to the active ``evaluate`` run; promote.

    The headline metrics (table in %, see :func:`headline_metrics`) also go to the pipeline's
    parent run; the full ``metrics/mbeir.json`` is logged by the caller's ``track_stage``.

    The run is opened by the caller (the CLI's ``track_stage`` or a flow); without one, the
    logging calls are no-ops and only the promotion decision is made.
    """
    if not params.tracking.enabled:
        return
    from trace_core import tracking

    model_run = tracking.find_model_run(params)
    tracking.set_tags({"trace.model_run_id": model_run or "", "trace.model_id": metrics.get("model_id") or ""})
    tracking.log_headline(headline_metrics(metrics, timings))  # this run and the pipeline's parent run
    tracking.log_metrics(numeric_leaves({"timings": timings or {}}))
    for path in files:
        tracking.log_artifact(path, "evaluation")
    tracking.promote_model(params, metrics.get("model_id"), metrics["local"]["table"].get("average"))
    log.debug("evaluation logged to MLflow (model run %s)", model_run)
