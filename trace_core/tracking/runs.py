"""MLflow runs: pipeline parent runs, stage child runs, and logging into the active run.

Every ``dvc repro`` (or Prefect pipeline run) is one MLflow *parent* run; each stage that
executes opens a *child* run under it. The parent comes from ``TRACE_PARENT_RUN_ID`` when
set (the Prefect flow and ``make demo`` set it); otherwise, under ``dvc repro``, the unfinished
parent tagged with the same git commit, params hash and run name is reused, or created. A stage
run outside any pipeline is a single run. Every run is tagged with the git commit and the params
hash so MLflow's compare view lines up runs of different DVC experiments.

Runs are opened only here, called by the CLI and the Prefect flows; stage code only logs into
the active run. With ``params.tracking.enabled`` false every function is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from trace_core.config import Params, dump_params
from trace_core.flatten import flatten, numeric_leaves
from trace_core.ranks import is_main_process
from trace_core.redact import redact_url

log = logging.getLogger(__name__)

PARENT_ENV = "TRACE_PARENT_RUN_ID"
TAG_COMMIT = "trace.git_commit"
TAG_PARAMS_HASH = "trace.params_hash"
TAG_RUN_NAME = "trace.run_name"
TAG_KIND = "trace.kind"
TAG_STAGE = "trace.stage"
TAG_DVC_EXP = "trace.dvc_exp"
TAG_MODEL_ID = "trace.model_id"
TAG_PARENT = "mlflow.parentRunId"
#: the stage that closes a pipeline parent it opened itself (the last of trace_core/stages.py's registry;
#: tests/unit/test_tracking.py checks they agree; not imported from there: the registry imports every stage)
LAST_STAGE = "evaluate_zeroshot"
#: experiment tag read by the MLflow UI to pick its mode; "custom_model_development" is model training
#: (runs, metrics, compare view, registry) rather than the GenAI views (traces, prompts).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: longest pipeline run name (the changed params are listed in it, shortened beyond this).
MAX_RUN_NAME = 120

# (run id, stage) of the stage runs this process opened (innermost last); log_* write to the top.
_ACTIVE: list[tuple[str, str]] = []


# --- identity ---------------------------------------------------------------------------
def git_commit(cwd: Path | None = None) -> str:
    """Return ``git rev-parse HEAD`` of the working directory, or ``"unknown"`` outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def params_hash(params: Params) -> str:
    """Short sha256 of the canonical (sorted JSON) params; equal params give equal hashes."""
    blob = json.dumps(dump_params(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def committed_params(cwd: Path | None = None) -> dict[str, Any] | None:
    """The params.yaml of git ``HEAD`` (flattened), or None outside git or without one."""
    import yaml

    try:
        out = subprocess.run(
            ["git", "show", "HEAD:params.yaml"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
        raw = yaml.safe_load(out.stdout)
    except (OSError, subprocess.SubprocessError, yaml.YAMLError):
        return None
    return flatten(raw) if isinstance(raw, dict) else None


def changed_params(params: Params, baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """Params that differ from ``baseline`` (flattened), e.g. a ``dvc exp run -S`` override; no run name."""
    if baseline is None:
        return {}
    current = flatten(dump_params(params))
    return {k: v for k, v in sorted(current.items()) if k != "base.run_name" and k in baseline and baseline[k] != v}


def pipeline_run_name(run_name: str, changed: Mapping[str, Any], dvc_exp: str | None = None) -> str:
    """Name of a pipeline run: the run name, the DVC experiment, and the params it changes.

    ``pipeline_run_name("mini", {"train.lambda_gen": 0.5})`` is ``"mini train.lambda_gen=0.5"``;
    unchanged params give just ``"mini"``. Names longer than :data:`MAX_RUN_NAME` are cut with "...".
    """
    parts = [run_name, *([dvc_exp] if dvc_exp and dvc_exp != run_name else [])]
    parts += [f"{k}={_param_value(v)}" for k, v in changed.items()]
    name = " ".join(parts)
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 3] + "..."


def stage_params(params: Params, keys: Sequence[str]) -> dict[str, Any]:
    """The flattened params under ``keys`` (a stage's params sections, as in ``dvc.yaml``)."""
    full = flatten(dump_params(params))
    return {k: v for k, v in full.items() if any(k == p or k.startswith(p + ".") for p in keys)}


def run_tags(params: Params) -> dict[str, str]:
    """Tags shared by parent and child runs: git commit, params hash, run name, DVC exp."""
    tags = {
        TAG_COMMIT: git_commit(),
        TAG_PARAMS_HASH: params_hash(params),
        TAG_RUN_NAME: params.base.run_name,
    }
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        tags[TAG_DVC_EXP] = exp
    return tags


# --- store --------------------------------------------------------------------------------
def tracking_uri(params: Params) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``params.tracking.tracking_uri``.

    A relative SQLite path is made absolute against the working directory now, so the
    store does not move when the process changes directory later.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def store_client(params: Params) -> MlflowClient:
    """An MLflow client on the tracking store (tracking and registry URIs set for this process)."""
    uri = tracking_uri(params)
    # mlflow.set_*_uri also export MLFLOW_*_URI to os.environ; keep the user's values so a
    # long-lived process (Prefect server, tests) does not leak one project's store into the next.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(params: Params, mlflow_client: MlflowClient | None = None) -> str:
    """Return the id of ``params.tracking.experiment``, creating it (with its artifact root)."""
    client = mlflow_client or store_client(params)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    if exp is not None:
        if exp.tags.get(TAG_EXPERIMENT_KIND) != MODEL_TRAINING:
            client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
        return str(exp.experiment_id)
    location = params.tracking.artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    tags = {TAG_EXPERIMENT_KIND: MODEL_TRAINING}
    return str(client.create_experiment(params.tracking.experiment, artifact_location=location, tags=tags))


# --- parent runs ----------------------------------------------------------------------------
def _find_parent(client: MlflowClient, exp_id: str, tags: Mapping[str, str]) -> str | None:
    wanted = [f"tags.`{k}` = '{tags[k]}'" for k in (TAG_COMMIT, TAG_PARAMS_HASH, TAG_RUN_NAME)]
    query = " and ".join([*wanted, f"tags.`{TAG_KIND}` = 'pipeline'", "attributes.status = 'RUNNING'"])
    runs = client.search_runs([exp_id], filter_string=query, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def start_pipeline(
    params: Params, reuse: bool = True, tags: Mapping[str, str] | None = None, name: str | None = None
) -> str:
    """Return the id of an open pipeline parent run for these params (created if needed).

    The parent carries every param (flattened) and, once ``evaluate`` ran, the headline
    metrics (see :func:`log_headline`), so MLflow's compare view sets params against scores.

    Args:
        params: the pipeline's params (tags come from them and from git).
        reuse: reuse an unfinished parent with the same commit, params hash and run name.
        tags: extra tags of a newly created parent (e.g. ``trace.ablation``).
        name: run name; default :func:`pipeline_run_name` of the run name, the DVC experiment and
            the params that differ from the committed ``params.yaml``.
    """
    if not params.tracking.enabled:
        return ""
    client = store_client(params)
    exp_id = experiment_id(params, client)
    base_tags = run_tags(params)
    found = _find_parent(client, exp_id, base_tags) if reuse else None
    if found:
        return found
    all_tags = {**base_tags, **(tags or {}), TAG_KIND: "pipeline"}
    if name is None:
        changed = changed_params(params, committed_params())
        name = pipeline_run_name(params.base.run_name, changed, os.environ.get("DVC_EXP_NAME"))
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    flat = {_metric_key(k): _param_value(v) for k, v in flatten(dump_params(params)).items()}
    keys = sorted(flat)
    for start in range(0, len(keys), 100):
        batch = [Param(k, flat[k]) for k in keys[start : start + 100]]
        client.log_batch(run.info.run_id, params=batch, synchronous=True)
    log.info("MLflow pipeline run %s '%s' (experiment %s)", run.info.run_id, name, params.tracking.experiment)
    return str(run.info.run_id)


def end_pipeline(params: Params, run_id: str, status: str = "FINISHED") -> bool:
    """Close a pipeline parent run; a parent without any stage run is deleted instead.

    Returns:
        True if the run was kept (it has stage runs), False if deleted or tracking is off.
    """
    if not params.tracking.enabled or not run_id:
        return False
    client = store_client(params)
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1
    )
    if not children:
        client.delete_run(run_id)
        log.info("no stage ran (DVC found everything up to date): empty MLflow run %s removed", run_id)
        return False
    if run.info.status == "RUNNING":
        client.set_terminated(run_id, status=status)
    return True


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else redact_url(str(value))
    return text[:6000]


# --- stage runs --------------------------------------------------------------------------------
def in_pipeline() -> bool:
    """Whether this process runs under a pipeline: a Prefect/demo parent run, or ``dvc repro``."""
    return bool(os.environ.get(PARENT_ENV) or os.environ.get("DVC_STAGE"))


@contextmanager
def stage_run(params: Params, stage: str, keys: Sequence[str] = ()) -> Iterator[str]:
    """Open the MLflow run of ``stage``; the only place stage runs are opened (CLI and flows call it).

    Inside a pipeline (see :func:`in_pipeline`) the run is a child of the pipeline's parent: the
    parent id comes from ``TRACE_PARENT_RUN_ID`` if set, else one parent per (git commit, params
    hash, run name) is found or created and the last stage (evaluate) closes it. Outside a
    pipeline (a user typing ``trace validate --data-root DIR``) the run is a single top-level run,
    so nothing is left RUNNING. The run always ends: FINISHED, or FAILED when the stage raised.
    Tags: git commit, params hash, stage; params: the keys the stage reads. Yields the run id
    ("" and no-op everywhere if tracking is off or on a rank other than 0). Re-entrant.
    """
    if not params.tracking.enabled or not is_main_process():  # one run per stage, from rank 0
        yield ""
        return
    if _ACTIVE and _ACTIVE[-1][1] == stage:
        yield _ACTIVE[-1][0]
        return
    env_parent = os.environ.get(PARENT_ENV, "")
    parent = (env_parent or start_pipeline(params)) if in_pipeline() else None
    exp_id = experiment_id(params)
    tags = {**run_tags(params), TAG_KIND: "stage", TAG_STAGE: stage}
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent, tags=tags) as run:
        run_id = str(run.info.run_id)
        _ACTIVE.append((run_id, stage))
        try:
            log_params(stage_params(params, keys))
            yield run_id
        finally:
            _ACTIVE.pop()
    if parent and stage == LAST_STAGE and not env_parent:
        end_pipeline(params, parent)


@contextmanager
def track_stage(
    params: Params, stage: str, keys: Sequence[str], metrics_file: Path | None, artifacts: Sequence[Path]
) -> Iterator[str]:
    """:func:`stage_run` plus, on success, the stage's metrics file and reports logged."""
    with stage_run(params, stage, keys) as run_id:
        yield run_id
        if metrics_file is not None and metrics_file.is_file():
            data = json.loads(metrics_file.read_text())
            log_metrics(numeric_leaves(data))
            log_artifact(metrics_file, "metrics")
        for path in artifacts:
            if path.exists():
                log_artifact(path, "reports" if path.is_file() else f"reports/{path.name}")


def active_run_id() -> str:
    """Id of the innermost stage run opened by this process ("" when none)."""
    return _ACTIVE[-1][0] if _ACTIVE else ""


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active stage run (non-finite and non-numeric skipped)."""
    if not _ACTIVE:
        return
    clean = {_metric_key(k): float(v) for k, v in metrics.items() if _is_number(v)}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_headline(metrics: Mapping[str, float]) -> None:
    """Log the headline metrics to the active stage run and to its pipeline parent run.

    The parent run holds every param, so these metrics (the M-BEIR average and per-task
    numbers) line up against params across pipeline runs in MLflow's compare view.
    """
    if not _ACTIVE:
        return
    log_metrics(metrics)
    client = MlflowClient()
    parent = client.get_run(_ACTIVE[-1][0]).data.tags.get(TAG_PARENT)
    clean = {_metric_key(k): float(v) for k, v in metrics.items() if _is_number(v)}
    if parent and clean:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in sorted(clean.items())]
        client.log_batch(parent, metrics=batch, synchronous=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(key))


def log_params(flat: Mapping[str, Any]) -> None:
    """Log params (values stringified, lists as JSON) to the active stage run."""
    if not _ACTIVE:
        return
    items = {_metric_key(k): _param_value(v) for k, v in flat.items()}
    keys = sorted(items)
    for start in range(0, len(keys), 100):
        mlflow.log_params({k: items[k] for k in keys[start : start + 100]})


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log a file or a whole directory to the active stage run (missing paths skipped)."""
    if not _ACTIVE:
        return
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path or path.name)
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        log.warning("not logged to MLflow (missing): %s", path)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active stage run."""
    if _ACTIVE:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
