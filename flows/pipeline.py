"""Prefect 3 flows: one per phase (data, cot, train, index, evaluate) and ``trace-pipeline``.

Flows orchestrate only. Each task runs ``dvc repro <stage>`` (or ``dvc exp run -S`` with
overrides) in the project directory and streams its log lines to the Prefect logger; DVC
is the only cache (``NO_CACHE``, no persisted results), retries only on I/O stages. The
pipeline flow opens the MLflow parent run, passes it to every stage through
``TRACE_PARENT_RUN_ID`` and publishes the DVC metrics and the MLflow run id as artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.dvc import Scalar, dvc_command, dvc_value, read_metrics, stage_env, stream
from trace_core.config import apply_overrides, parse_params
from trace_core.env import quiet_environment
from trace_core.paths import Paths
from trace_core.stages import PHASES, STAGES, phase_stages

PROJECT_ENV = "TRACE_PROJECT_DIR"
PARENT_ENV = "TRACE_PARENT_RUN_ID"


class RunConfig(BaseModel):
    """Typed flow parameters: params overrides and how to run DVC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overrides: dict[str, Scalar] = Field(
        default_factory=dict,
        description="dotted params key -> value, applied with `dvc exp run -S key=value` (empty: `dvc repro`)",
    )
    force: bool = Field(False, description="re-run the stages even when DVC finds them up to date")
    project_dir: str | None = Field(None, description=f"project root (default: ${PROJECT_ENV} or this checkout)")


DEFAULT_CONFIG = RunConfig()


def project_dir(config: RunConfig) -> Path:
    """Project root: the config's, else ``$TRACE_PROJECT_DIR``, else this checkout."""
    chosen = config.project_dir or os.environ.get(PROJECT_ENV)
    return Path(chosen).resolve() if chosen else Path(__file__).resolve().parents[1]


@contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    cwd = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def _artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


@task(task_run_name="dvc-{stage}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, config: RunConfig, parent_run_id: str = "") -> int:
    """Run one DVC stage (``dvc repro <stage>``), streaming its output to the Prefect log."""
    logger = get_run_logger()
    root = project_dir(config)
    extra = {PARENT_ENV: parent_run_id} if parent_run_id else {}
    rc = stream(dvc_command([stage], config.overrides, config.force), root, stage_env(extra), logger.info)
    if rc != 0:
        raise RuntimeError(f"dvc stage {stage!r} failed with exit code {rc}")
    return rc


# I/O-bound stages (hub download, teacher endpoint, Milvus server) may fail transiently.
run_io_stage = run_stage.with_options(retries=2, retry_delay_seconds=[10, 60])


@task(cache_policy=NO_CACHE, persist_result=False)
def publish_metrics(stage: str, config: RunConfig) -> dict[str, float]:
    """Publish a stage's DVC metrics file as a Prefect table artifact."""
    root = project_dir(config)
    params = _load_params(root, config)
    metrics_file = STAGES[stage].metrics_file(Paths.from_params(params, root))
    metrics = read_metrics(metrics_file) if metrics_file else {}
    if metrics:
        rows = [{"metric": k, "value": round(v, 6)} for k, v in sorted(metrics.items())]
        create_table_artifact(rows, key=_artifact_key(f"trace-metrics-{stage}"), description=f"DVC metrics of {stage}")
    return metrics


def _load_params(root: Path, config: RunConfig) -> Any:
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    overrides = {k: dvc_value(k, v) for k, v in config.overrides.items()}
    return parse_params(apply_overrides(raw, overrides), str(root / "params.yaml"))


def _run_phase(phase: str, config: RunConfig, parent_run_id: str) -> dict[str, dict[str, float]]:
    published: dict[str, dict[str, float]] = {}
    for stage in phase_stages(phase):
        runner = run_io_stage if stage.io_bound else run_stage
        runner(stage.name, config, parent_run_id)
        if stage.metrics:
            published[stage.name] = publish_metrics(stage.name, config)
    return published


@flow(name="trace-data", log_prints=False)
def data_flow(config: RunConfig = DEFAULT_CONFIG, parent_run_id: str = "") -> dict[str, dict[str, float]]:
    """Download (or generate) M-BEIR and validate it with Great Expectations."""
    return _run_phase("data", config, parent_run_id)


@flow(name="trace-cot")
def cot_flow(config: RunConfig = DEFAULT_CONFIG, parent_run_id: str = "") -> dict[str, dict[str, float]]:
    """Generate, curate and build the M-BEIR-CoT training file."""
    return _run_phase("cot", config, parent_run_id)


@flow(name="trace-train")
def train_flow(config: RunConfig = DEFAULT_CONFIG, parent_run_id: str = "") -> dict[str, dict[str, float]]:
    """Joint generation + contrastive training (DeepSpeed ZeRO-3)."""
    return _run_phase("train", config, parent_run_id)


@flow(name="trace-index")
def index_flow(config: RunConfig = DEFAULT_CONFIG, parent_run_id: str = "") -> dict[str, dict[str, float]]:
    """Export routed query and pool embeddings and build the vector index."""
    return _run_phase("index", config, parent_run_id)


@flow(name="trace-evaluate")
def evaluate_flow(config: RunConfig = DEFAULT_CONFIG, parent_run_id: str = "") -> dict[str, dict[str, float]]:
    """Score the 16-column M-BEIR table and promote the model in the registry."""
    return _run_phase("evaluate", config, parent_run_id)


PHASE_FLOWS = {"data": data_flow, "cot": cot_flow, "train": train_flow, "index": index_flow, "evaluate": evaluate_flow}


@task(cache_policy=NO_CACHE, persist_result=False)
def open_parent_run(config: RunConfig) -> str:
    """Open the MLflow parent run of this pipeline run ("" with tracking off)."""
    from trace_core import tracking

    params = _load_params(project_dir(config), config)
    with _in_dir(project_dir(config)):  # relative sqlite/artifact locations resolve in the project
        return tracking.start_pipeline(params, reuse=False)


@task(cache_policy=NO_CACHE, persist_result=False)
def close_parent_run(config: RunConfig, run_id: str, status: str) -> None:
    """Close the MLflow parent run and publish its id as a Prefect artifact."""
    from trace_core import tracking

    params = _load_params(project_dir(config), config)
    with _in_dir(project_dir(config)):
        kept = tracking.end_pipeline(params, run_id, status)
        uri = tracking.tracking_uri(params)
    if run_id:
        note = "" if kept else "- no stage ran (DVC found everything up to date); the empty run was removed\n"
        text = (
            f"# MLflow\n\n- tracking URI: `{uri}`\n- experiment: `{params.tracking.experiment}`\n"
            f"- parent run id: `{run_id}`\n- status: {status}\n{note}"
        )
        create_markdown_artifact(text, key="trace-mlflow-run", description="MLflow parent run of this pipeline run")


@task(cache_policy=NO_CACHE, persist_result=False)
def publish_report(config: RunConfig) -> None:
    """Publish the M-BEIR report (reports/mbeir.md) as a markdown artifact."""
    root = project_dir(config)
    params = _load_params(root, config)
    report = root / params.paths.reports_dir / "mbeir.md"
    if report.is_file():
        create_markdown_artifact(report.read_text(), key="trace-mbeir-report", description="16-column M-BEIR table")


@flow(name="trace-pipeline")
def trace_pipeline(config: RunConfig = DEFAULT_CONFIG, phases: list[str] | None = None) -> dict[str, Any]:
    """Run the phases in order (all by default) under one MLflow parent run."""
    quiet_environment()
    chosen = phases or list(PHASES)
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        raise ValueError(f"unknown phases {unknown}; choose from {list(PHASES)}")
    parent = open_parent_run(config)
    results: dict[str, Any] = {"mlflow_parent_run_id": parent}
    status = "FAILED"
    try:
        for phase in (p for p in PHASES if p in chosen):
            results[phase] = PHASE_FLOWS[phase](config, parent)
        status = "FINISHED"
    finally:
        close_parent_run(config, parent, status)
    if "evaluate" in chosen:
        publish_report(config)
    return results
