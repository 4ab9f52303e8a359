"""Prefect 3 flows: one per phase (data, cot, train, index, evaluate) and ``trace-pipeline``.

Flows orchestrate only. Each task runs ``dvc repro <stage>`` (or ``dvc exp run -S`` with
overrides) in the project directory and streams its log lines to the Prefect logger; DVC
is the only cache (``NO_CACHE``, no persisted results), retries only on I/O stages. The
pipeline flow opens the MLflow parent run, passes it to every stage through
``TRACE_PARENT_RUN_ID``, runs the phase subflows as a chain (each waits on the previous one's
state, so the run graph shows the order) and publishes the DVC metrics as table artifacts and
the MLflow runs as links. Stage start/finish lines and the stages' own INFO lines also go to
the top-level flow run, which is what ``prefect deployment run ... --watch`` streams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
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


def _pipeline_logger() -> Any:
    """A logger whose lines land on the top-level flow run (what ``deployment run --watch`` streams).

    Inside a phase subflow the task's own logger writes to the subflow's run, which ``--watch``
    of the pipeline does not show; stage start/finish and summary lines go to the root run too.
    """
    from prefect.logging.loggers import flow_run_logger
    from prefect.runtime import flow_run

    root, current = flow_run.root_flow_run_id, flow_run.id
    return None if not root or str(root) == str(current) else flow_run_logger(flow_run_id=UUID(str(root)))


def is_summary(line: str) -> bool:
    """Whether a stage output line is one of our INFO lines (summaries, training progress)."""
    return " INFO trace_core." in line or " WARNING " in line or " ERROR " in line


@task(task_run_name="dvc-{stage}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, config: RunConfig, parent_run_id: str = "") -> int:
    """Run one DVC stage (``dvc repro <stage>``), streaming its output to the Prefect log.

    Start, finish and our own INFO lines are also written to the pipeline's top-level run, so
    ``prefect deployment run ... --watch`` shows the stages go by.
    """
    logger = get_run_logger()
    top = _pipeline_logger()
    root = project_dir(config)
    extra = {PARENT_ENV: parent_run_id} if parent_run_id else {}

    def emit(line: str) -> None:
        logger.info(line)
        if top is not None and is_summary(line):
            top.info("%s | %s", stage, line)

    (top or logger).info("stage %s: started", stage)
    start = time.perf_counter()
    rc = stream(dvc_command([stage], config.overrides, config.force), root, stage_env(extra), emit)
    verdict = "finished" if rc == 0 else f"FAILED (exit code {rc})"
    (top or logger).info("stage %s: %s in %.0f s", stage, verdict, time.perf_counter() - start)
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
    """Score the 16-column M-BEIR table (promoting the model) and the 13-column zero-shot table."""
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
    """Close the MLflow parent run and publish links to the live MLflow runs as Prefect artifacts.

    When no stage ran (DVC found everything up to date) the empty parent is deleted, and the
    links point at the latest finished pipeline run of the same params instead.
    """
    from trace_core import tracking

    if not run_id:
        return
    params = _load_params(project_dir(config), config)
    with _in_dir(project_dir(config)):
        kept = tracking.end_pipeline(params, run_id, status)
        client = tracking.store_client(params)
        exp_id = tracking.experiment_id(params, client)
        live = run_id if kept else _latest_pipeline_run(client, exp_id, tracking.params_hash(params))
        stages = _stage_runs(client, exp_id, live) if live else []
    base = mlflow_ui_url()
    note = "" if kept else "No stage ran (DVC found everything up to date); the empty parent run was removed. "
    if live:
        create_link_artifact(
            run_link(base, exp_id, live), link_text=f"MLflow pipeline run {live[:8]}", key="trace-mlflow-run"
        )
    lines = [f"# MLflow ({status})", "", note + f"Served by `make mlflow-ui` at {base}.", ""]
    if live:
        lines.append(f"- [pipeline run {live}]({run_link(base, exp_id, live)}) (params and headline metrics)")
    lines += [f"- [{name}]({run_link(base, exp_id, rid)})" for name, rid in stages]
    lines.append(f"- [compare pipeline runs]({experiment_link(base, exp_id)})")
    create_markdown_artifact("\n".join(lines) + "\n", key="trace-mlflow-links", description="MLflow runs")


def mlflow_ui_url() -> str:
    """Base URL of the MLflow UI: ``TRACE_MLFLOW_UI_URL``, an http(s) tracking URI, or ``make mlflow-ui``'s."""
    uri = os.environ.get("TRACE_MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    host, port = os.environ.get("MLFLOW_HOST", "127.0.0.1"), os.environ.get("MLFLOW_PORT", "5000")
    return f"http://{host}:{port}"


def run_link(base: str, exp_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (model-training view)."""
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_link(base: str, exp_id: str) -> str:
    """The MLflow UI run table of an experiment (model-training view)."""
    return f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning"


def _latest_pipeline_run(client: Any, exp_id: str, params_hash: str) -> str | None:
    query = f"tags.`trace.kind` = 'pipeline' and tags.`trace.params_hash` = '{params_hash}'"
    runs = client.search_runs([exp_id], filter_string=query, max_results=1, order_by=["attributes.start_time DESC"])
    return str(runs[0].info.run_id) if runs else None


def _stage_runs(client: Any, exp_id: str, parent: str) -> list[tuple[str, str]]:
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    order = {name: i for i, name in enumerate(STAGES)}
    named = [(str(r.data.tags.get("trace.stage", r.info.run_name)), str(r.info.run_id)) for r in runs]
    return sorted(named, key=lambda x: order.get(x[0], len(order)))


@task(cache_policy=NO_CACHE, persist_result=False)
def publish_report(config: RunConfig) -> None:
    """Publish the M-BEIR and zero-shot reports (reports/{mbeir,zeroshot}.md) as markdown artifacts."""
    root = project_dir(config)
    params = _load_params(root, config)
    for name, key, what in (
        ("mbeir.md", "trace-mbeir-report", "16-column M-BEIR table"),
        ("zeroshot.md", "trace-zeroshot-report", "13-column zero-shot table"),
    ):
        report = root / params.paths.reports_dir / name
        if report.is_file():
            create_markdown_artifact(report.read_text(), key=key, description=what)


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
        previous: list[Any] = []
        for phase in (p for p in PHASES if p in chosen):
            # wait_for on the previous phase's state: the run graph draws the phases as a chain
            state = PHASE_FLOWS[phase](config, parent, return_state=True, wait_for=previous)
            results[phase] = state.result()  # raises if the phase failed
            previous = [state]
        status = "FINISHED"
    finally:
        close_parent_run(config, parent, status)
    if "evaluate" in chosen:
        publish_report(config)
    return results
