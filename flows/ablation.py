"""Ablation on M-BEIR-mini: the paper's Tables 2 and 5 in miniature, from real runs.

Each variant is a DVC experiment (``dvc exp run -n ablation-<name> -S key=value ...``) and
an MLflow pipeline run (parent tagged ``trace.ablation``):

* ``adaptive`` / ``never`` / ``always``: the *same checkpoint* (train is cached by DVC;
  export, index and evaluate are forced to re-run, so every QPS is measured afresh) with
  implicit routing adaptive, never reasoning (LamRA-style direct embedding) and always
  reasoning (Table 2: R@5, routing rates, QPS);
* ``self-chains`` / ``self-chains+reward`` / ``gold-continue`` (beyond the paper): the same
  phase-1 checkpoint (train is cached) plus a second phase (stage ``self_train``) whose InfoNCE
  embeds reasoning queries after the model's own chains (with the embedder-as-judge filter),
  or, as the steps-matched control, after the gold chains only; compared with ``adaptive``,
  ``no-chains`` and (the self-chain rows) ``gold-continue``;
* ``no-chains``: a control trained without chains (every query routed z=0, so every
  target is ``<|emb|>`` only, and ``lambda_gen = 0``), evaluated with direct embedding
  (Table 5's "w/o CoT" row).

Every variant states ``self_chain.enabled`` (and its routing), so the rows do not depend on the
defaults of ``params.yaml``. Variants other than ``adaptive`` set ``tracking.promote: false`` so
that they never move the registry's champion/challenger aliases. The workspace is put back to the baseline afterwards
(params.yaml and dvc.lock restored, ``dvc checkout``). ``reports/ablation.md`` and
``reports/ablation.json`` summarise the numbers exactly as measured. Run it with
``make ablation`` or ``python -m flows.ablation``. Each variant's per-query hits (its local
run file against the qrels) feed paired bootstrap 95 % intervals of adaptive minus each other
variant and of each variant minus its ``references``, per task and for the average
(``reports/ablation.png`` plots each variant's recall with its interval).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.dvc import dvc_executable, format_override
from trace_core.config import Params, apply_overrides, dump_params, load_params, parse_params
from trace_core.data.mbeir import TEST_TASKS, present_test_tasks, qrels_file, read_qrels
from trace_core.evaluation.ablation import (
    AVERAGE,
    reference_pairs,
    report_markdown,
    significance_markdown,
    statistics,
    summarise,
    task_hits,
)
from trace_core.evaluation.metrics import read_run
from trace_core.io import write_json, write_text
from trace_core.paths import Paths
from trace_core.plots import Series, grouped_bars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One ablation row: a name, the params it sets and what it stands for."""

    name: str
    overrides: dict[str, Any]
    description: str
    table: str  # "routing" (Table 2), "control" (Table 5) or "self_chain" (beyond the paper)
    force_from: str | None = None  # re-run this stage and everything after it (fresh timings)
    references: tuple[str, ...] = ()  # variants it is also compared with (paired intervals), besides adaptive


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "adaptive",
        {"export.routing": "adaptive", "self_chain.enabled": False},
        "TRACE as in the paper (phase 1 only), implicit adaptive routing",
        "routing",
        force_from="export",
    ),
    Variant(
        "never",
        {"export.routing": "never", "self_chain.enabled": False, "tracking.promote": False},
        "same checkpoint, never reason (direct embedding)",
        "routing",
        force_from="export",
    ),
    Variant(
        "always",
        {"export.routing": "always", "self_chain.enabled": False, "tracking.promote": False},
        "same checkpoint, always reason (forced CoT)",
        "routing",
        force_from="export",
    ),
    # self_train runs a second phase on the cached phase-1 model (train's params are unchanged, so
    # DVC does not re-run it); steps budget: phase 1 (train.epochs) + self_chain.epochs of phase 2.
    Variant(
        "self-chains",
        {"self_chain.enabled": True, "export.routing": "adaptive", "tracking.promote": False},
        "phase 1 as adaptive, then self_chain.epochs more on the same rows with InfoNCE after the model's own "
        "greedy chains (L_gen on the gold chains); steps: train.epochs + self_chain.epochs; adaptive routing",
        "self_chain",
        references=("no-chains", "gold-continue"),
    ),
    Variant(
        "self-chains+reward",
        {
            "self_chain.enabled": True,
            "self_chain.reward": True,
            "export.routing": "adaptive",
            "tracking.promote": False,
        },
        "as self-chains, keeping an own chain only when its embedding scores the positive higher than the gold "
        "chain's (else gold); steps: train.epochs + self_chain.epochs; adaptive routing",
        "self_chain",
        references=("no-chains", "gold-continue"),
    ),
    Variant(
        "gold-continue",
        {
            "self_chain.enabled": True,
            "self_chain.own_fraction": 0.0,
            "export.routing": "adaptive",
            "tracking.promote": False,
        },
        "steps-matched control of the self-chain rows: the same phase 2 on gold chains only "
        "(self_chain.own_fraction = 0); steps: train.epochs + self_chain.epochs; adaptive routing",
        "self_chain",
        references=("no-chains",),
    ),
    Variant(
        "no-chains",
        {
            "cot_generate.routing.reason_datasets": [],
            "train.lambda_gen": 0.0,
            "train.lambda_route": 0.0,
            "export.routing": "never",
            "train.val_routing": "never",  # validation as the control is evaluated
            "self_chain.enabled": False,
            "tracking.promote": False,
        },
        "control trained without chains (all targets <|emb|> only, lambda_gen = lambda_route = 0), direct embedding",
        "control",
    ),
)


# --- I/O: running the experiments ---------------------------------------------------------
def with_overrides(params: Params, overrides: Mapping[str, Any]) -> Params:
    """``params`` with dotted overrides applied (what ``dvc exp run -S`` writes)."""
    return parse_params(apply_overrides(dump_params(params), overrides), "ablation overrides")


def set_args(overrides: Mapping[str, Any]) -> list[str]:
    """``-S key=value`` arguments, values as YAML flow scalars (as DVC parses them)."""
    return [arg for key, value in overrides.items() for arg in ("-S", format_override(key, value))]


def run_dvc(args: Sequence[str], root: Path, env: Mapping[str, str], check: bool = True) -> int:
    """Run ``dvc <args>`` in ``root`` with its output passed through to the log."""
    cmd = [dvc_executable(), *args]
    log.info("$ %s", " ".join(cmd))
    rc = subprocess.run(cmd, cwd=root, env=dict(env), check=False).returncode
    if check and rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {rc}")
    return rc


def existing_experiments(root: Path, env: Mapping[str, str]) -> set[str]:
    """Names of the DVC experiments of the repository (all commits)."""
    cmd = [dvc_executable(), "exp", "list", "--all-commits", "--name-only"]
    out = subprocess.run(cmd, cwd=root, env=dict(env), capture_output=True, text=True, check=False).stdout
    return set(out.split())


def run_variant(variant: Variant, params: Params, root: Path) -> tuple[dict[str, Any], str, str]:
    """Run one variant as a DVC experiment under its own MLflow parent; return its summary row."""
    from trace_core import tracking

    vparams = with_overrides(params, {**variant.overrides, "base.run_name": f"ablation-{variant.name}"})
    parent = tracking.start_pipeline(vparams, reuse=False, tags={"trace.ablation": variant.name})
    env = {
        **os.environ,
        tracking.PARENT_ENV: parent,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    name = f"ablation-{variant.name}"
    if name in existing_experiments(root, env):
        run_dvc(["exp", "remove", name], root, env)
    status = "FAILED"
    try:
        overrides = {**variant.overrides, "base.run_name": f"ablation-{variant.name}"}
        force = ["--force", "--downstream", variant.force_from] if variant.force_from else []
        run_dvc(["exp", "run", "-n", name, *set_args(overrides), *force], root, env)
        status = "FINISHED"
    finally:
        tracking.end_pipeline(vparams, parent, status)
    paths = Paths.from_params(params, root)
    metrics = json.loads(paths.metrics_file("mbeir").read_text())
    timings = paths.timings_file("evaluate")
    return summarise(metrics, json.loads(timings.read_text()) if timings.is_file() else None), name, parent


def variant_hits(params: Params, root: Path) -> dict[str, list[float]]:
    """Per-query hits at each task's reported k, from the workspace's local run file and the qrels."""
    paths = Paths.from_params(params, root)
    rankings = read_run(paths.reports_dir / "runs" / "mbeir_test_local_run.txt")
    tasks = present_test_tasks(paths.data_root)
    qrels = {
        t.stem: {q: e.positives for q, e in read_qrels(qrels_file(paths.data_root, "test", t.stem)).items()}
        for t in tasks
    }
    return task_hits(rankings, qrels, {t.stem: t.reported_k for t in tasks})


def write_statistics(hits: Mapping[str, Any], reports: Path, n_boot: int = 1000) -> tuple[str, dict[str, Any]]:
    """Bootstrap intervals (adaptive vs each variant, each variant vs its references), ``reports/ablation.png``.

    Returns the markdown and the JSON form.
    """
    pairs = reference_pairs(list(hits), {v.name: v.references for v in VARIANTS})
    intervals, diffs = statistics(hits, "adaptive", n_boot=n_boot, seed=0, pairs=pairs)
    order = [t for t in TEST_TASKS if t.stem in hits["adaptive"]]
    series = [
        Series(
            name,
            [100 * iv[t.stem].value for t in order] + [100 * iv[AVERAGE].value],
            low=[100 * iv[t.stem].low for t in order] + [100 * iv[AVERAGE].low],
            high=[100 * iv[t.stem].high for t in order] + [100 * iv[AVERAGE].high],
        )
        for name, iv in intervals.items()
    ]
    grouped_bars(
        [t.label for t in order] + ["average"],
        series,
        reports / "ablation.png",
        title="Ablation on M-BEIR-mini: reported recall per task with 95 % bootstrap intervals",
        ylabel="reported recall R@5 / R@10 (%)",
        averages=False,
    )
    as_json = {
        kind: {name: {k: vars(iv) for k, iv in table.items()} for name, table in data.items()}
        for kind, data in (("intervals", intervals), ("differences", diffs))
    }
    return significance_markdown(diffs, n_boot, 0.95), {**as_json, "n_boot": n_boot, "level": 0.95}


def restore(saved: Mapping[Path, str], path: Path) -> None:
    """Put ``path`` back to its baseline text: each variant's overrides apply to the baseline."""
    if path in saved:
        path.write_text(saved[path])


def run(params_path: Path = Path("params.yaml"), only: Sequence[str] | None = None) -> Path:
    """Run the variants, restore the baseline workspace, write ``reports/ablation.md``."""
    from trace_core import tracking

    root = Path.cwd()
    params = load_params(params_path)
    chosen = [v for v in VARIANTS if not only or v.name in only]
    saved = {p: p.read_text() for p in (root / "params.yaml", root / "dvc.lock") if p.exists()}
    rows: dict[str, Any] = {}
    hits: dict[str, dict[str, list[float]]] = {}
    meta: dict[str, Any] = {"experiments": {}, "mlflow": {}, "descriptions": {}, "overrides": {}, "tables": {}}
    try:
        for variant in chosen:
            restore(saved, root / "params.yaml")  # `dvc exp run -S` leaves its params in the workspace
            rows[variant.name], exp, parent = run_variant(variant, params, root)
            hits[variant.name] = variant_hits(params, root)
            meta["experiments"][variant.name], meta["mlflow"][variant.name] = exp, parent
            meta["descriptions"][variant.name], meta["overrides"][variant.name] = variant.description, variant.overrides
            meta["tables"][variant.name] = variant.table
    finally:
        for path, text in saved.items():
            path.write_text(text)
        run_dvc(["checkout", "--force"], root, os.environ, check=False)
    meta.update(git_commit=tracking.git_commit(), profile=params.base.profile, cpus=os.cpu_count())
    reports = root / params.paths.reports_dir
    significance, stats = write_statistics(hits, reports) if "adaptive" in hits and len(hits) > 1 else (None, {})
    write_json(reports / "ablation.json", {"rows": rows, "meta": meta, "statistics": stats})
    out = reports / "ablation.md"
    write_text(out, report_markdown(rows, meta, significance))
    _log_summary(params, out, reports / "ablation.json", rows)
    return out


def _log_summary(params: Params, report: Path, data: Path, rows: Mapping[str, Any]) -> None:
    from trace_core import tracking

    parent = tracking.start_pipeline(params, reuse=False, tags={"trace.ablation": "summary"})
    os.environ[tracking.PARENT_ENV] = parent
    try:
        _log_rows(params, report, data, rows)
    finally:
        os.environ.pop(tracking.PARENT_ENV, None)
        tracking.end_pipeline(params, parent)


def _log_rows(params: Params, report: Path, data: Path, rows: Mapping[str, Any]) -> None:
    from trace_core import tracking

    with tracking.stage_run(params, "ablation"):
        for name, s in rows.items():
            if s["average"] is not None:
                tracking.log_metrics(
                    {f"{name}.average": s["average"], f"{name}.reasoned_rate": s["routing"]["reasoned"]}
                )
            if s["query_qps"]:
                tracking.log_metrics({f"{name}.query_qps": s["query_qps"]})
        tracking.log_artifact(report, "ablation")
        tracking.log_artifact(data, "ablation")
        if (report.parent / "ablation.png").is_file():
            tracking.log_artifact(report.parent / "ablation.png", "ablation")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.ablation [--only NAME ...] [-p params.yaml]``."""
    import argparse

    from trace_core.env import quiet_environment

    quiet_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m flows.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("-p", "--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--only", nargs="*", choices=[v.name for v in VARIANTS], help="run only these variants")
    args = parser.parse_args(argv)
    out = run(args.params, args.only)
    sys.stdout.write(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
