"""The one MLflow adapter: pipeline parent runs, stage child runs, registry and promotion.

Every ``dvc repro`` (or Prefect pipeline run) is one MLflow *parent* run; each stage that
executes opens a *child* run under it. The parent comes from ``TRACE_PARENT_RUN_ID`` when
set (the Prefect flow and ``make demo`` set it); otherwise the unfinished parent tagged
with the same git commit, params hash and run name is reused, or created. Every run is
tagged with the git commit and the params hash so MLflow's compare view lines up runs of
different DVC experiments.

Stages import this module lazily (inside ``run``); ``trace_core.cli`` never imports it.
With ``params.tracking.enabled`` false every function is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from trace_core.config import Params, dump_params
from trace_core.paths import Paths
from trace_core.redact import redact_url

log = logging.getLogger(__name__)

PARENT_ENV = "TRACE_PARENT_RUN_ID"
TAG_COMMIT = "trace.git_commit"
TAG_PARAMS_HASH = "trace.params_hash"
TAG_RUN_NAME = "trace.run_name"
TAG_KIND = "trace.kind"
TAG_STAGE = "trace.stage"
TAG_DVC_EXP = "trace.dvc_exp"
TAG_SCORE = "trace.mbeir_average"
TAG_DECISION = "trace.promotion"
TAG_MODEL_ID = "trace.model_id"
CHAMPION = "champion"
CHALLENGER = "challenger"
LAST_STAGE = "evaluate"

#: params sections each stage reads; dvc.yaml lists exactly these (a test checks it).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "download": ("base.seed", "download"),
    "validate": ("validate",),
    "cot_generate": ("base.seed", "cot_generate"),
    "cot_curate": ("cot_curate",),
    "cot_build": ("base.seed", "cot_build"),
    "train": ("base.seed", "model", "train"),
    "export": ("base.seed", "model.max_length", "export"),
    "index": ("index",),
    "evaluate": ("index", "evaluate"),
}

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


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (lists kept as values)."""
    if not isinstance(obj, Mapping):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(flatten(value, name) if isinstance(value, Mapping) and value else {name: value})
    return flat


def stage_params(params: Params, stage: str) -> dict[str, Any]:
    """Return the flattened params keys a stage reads (see :data:`STAGE_SECTIONS`)."""
    full = flatten(dump_params(params))
    keys = STAGE_SECTIONS.get(stage, ())
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


def _client(params: Params) -> MlflowClient:
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


def experiment_id(params: Params, client: MlflowClient | None = None) -> str:
    """Return the id of ``params.tracking.experiment``, creating it (with its artifact root)."""
    client = client or _client(params)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    location = params.tracking.artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return str(client.create_experiment(params.tracking.experiment, artifact_location=location))


# --- parent runs ----------------------------------------------------------------------------
def _find_parent(client: MlflowClient, exp_id: str, tags: Mapping[str, str]) -> str | None:
    wanted = [f"tags.`{k}` = '{tags[k]}'" for k in (TAG_COMMIT, TAG_PARAMS_HASH, TAG_RUN_NAME)]
    query = " and ".join([*wanted, f"tags.`{TAG_KIND}` = 'pipeline'", "attributes.status = 'RUNNING'"])
    runs = client.search_runs([exp_id], filter_string=query, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def start_pipeline(params: Params, reuse: bool = True, tags: Mapping[str, str] | None = None) -> str:
    """Return the id of an open pipeline parent run for these params (created if needed).

    Args:
        params: the pipeline's params (tags come from them and from git).
        reuse: reuse an unfinished parent with the same commit, params hash and run name.
        tags: extra tags of a newly created parent (e.g. ``trace.ablation``).
    """
    if not params.tracking.enabled:
        return ""
    client = _client(params)
    exp_id = experiment_id(params, client)
    base_tags = run_tags(params)
    found = _find_parent(client, exp_id, base_tags) if reuse else None
    if found:
        return found
    all_tags = {**base_tags, **(tags or {}), TAG_KIND: "pipeline"}
    run = client.create_run(exp_id, run_name=f"pipeline-{params.base.run_name}", tags=all_tags)
    for key, value in sorted(flatten(dump_params(params)).items()):
        client.log_param(run.info.run_id, key, _param_value(value))
    log.info("MLflow pipeline run %s (experiment %s)", run.info.run_id, params.tracking.experiment)
    return str(run.info.run_id)


def end_pipeline(params: Params, run_id: str, status: str = "FINISHED") -> bool:
    """Close a pipeline parent run; a parent without any stage run is deleted instead.

    Returns:
        True if the run was kept (it has stage runs), False if deleted or tracking is off.
    """
    if not params.tracking.enabled or not run_id:
        return False
    client = _client(params)
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
@contextmanager
def stage_run(params: Params, stage: str) -> Iterator[str]:
    """Open an MLflow child run for ``stage`` under the pipeline's parent run.

    The parent id comes from ``TRACE_PARENT_RUN_ID`` if set, else one parent per (git commit,
    params hash, run name) is found or created; the last stage (evaluate) closes a parent it
    did not get from the environment. Tags: git commit, params hash, stage. Logs the params
    keys the stage reads. Yields the run id ("" and no-op everywhere if tracking is off).
    Re-entrant: inside an open run of the same stage it yields that run.
    """
    if not params.tracking.enabled or os.environ.get("RANK", "0") != "0":  # one run per stage, from rank 0
        yield ""
        return
    if _ACTIVE and _ACTIVE[-1][1] == stage:
        yield _ACTIVE[-1][0]
        return
    env_parent = os.environ.get(PARENT_ENV, "")
    parent = env_parent or start_pipeline(params)
    client = _client(params)
    exp_id = experiment_id(params, client)
    tags = {**run_tags(params), TAG_KIND: "stage", TAG_STAGE: stage}
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent, tags=tags) as run:
        run_id = str(run.info.run_id)
        _ACTIVE.append((run_id, stage))
        try:
            log_params(stage_params(params, stage))
            yield run_id
        finally:
            _ACTIVE.pop()
    if stage == LAST_STAGE and not env_parent:
        end_pipeline(params, parent)


def stage_outputs(paths: Paths, stage: str) -> tuple[Path | None, list[Path]]:
    """A stage's DVC metrics file (or None) and the reports worth keeping as MLflow artifacts."""
    reports = paths.reports_dir
    table: dict[str, tuple[str | None, list[Path]]] = {
        "download": (None, [paths.data_root / "MANIFEST.json"]),
        "validate": ("validation", [paths.validation_dir]),
        "cot_generate": (None, []),
        "cot_curate": ("cot_curate", [reports / "cot_curate.md", reports / "cot_curate_checks.json"]),
        "cot_build": ("cot_build", []),
        "export": (None, [paths.embeddings_dir / "manifest.json", paths.embeddings_dir / "routing.jsonl"]),
        "index": (None, [paths.index_manifest]),
    }
    metrics, files = table.get(stage, (None, []))
    return (paths.metrics_file(metrics) if metrics else None), files


@contextmanager
def track_stage(params: Params, paths: Paths, stage: str) -> Iterator[str]:
    """:func:`stage_run` plus, on success, the stage's metrics file and reports logged."""
    with stage_run(params, stage) as run_id:
        yield run_id
        metrics_file, files = stage_outputs(paths, stage)
        if metrics_file is not None and metrics_file.is_file():
            data = json.loads(metrics_file.read_text())
            log_metrics(flatten_numbers(data))
            log_artifact(metrics_file, "metrics")
        for path in files:
            if path.exists():
                log_artifact(path, "reports" if path.is_file() else f"reports/{path.name}")


def flatten_numbers(obj: Any) -> dict[str, float]:
    """Numeric leaves of a JSON object as dotted keys (booleans as 0/1)."""
    flat = flatten(obj) if isinstance(obj, Mapping) else {}
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float))}


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


# --- model registry (implemented in trace_core.registry) --------------------------------------
def register_model(params: Params, model_dir: Path) -> str:
    """Log a pyfunc that loads the saved HF files from the active stage run, register it; return the version."""
    from trace_core import registry

    return registry.register_model(params, model_dir)


def promote(params: Params, version: str, score: float) -> str:
    """Alias ``version`` champion iff ``score`` beats the current champion's, else challenger."""
    from trace_core import registry

    return registry.promote(params, version, score)


def promote_model(params: Params, model_id: str | None, score: float | None) -> str:
    """After evaluation: promote the version registered for ``model_id``; "" if none."""
    from trace_core import registry

    return registry.promote_model(params, model_id, score)


def decide_alias(score: float, version: str, champion: tuple[str, float] | None) -> str:
    """Promotion rule: champion iff no champion yet, same version, or strictly higher score."""
    if champion is None or champion[0] == version:
        return CHAMPION
    return CHAMPION if score > champion[1] else CHALLENGER


def find_model_run(params: Params) -> str | None:
    """Run id of the latest registered version of the model (None if none registered)."""
    from trace_core import registry

    return registry.find_model_run(params)


# --- command line (used by scripts/demo.sh around `dvc repro`) ---------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m trace_core.tracking start|end RUN_ID [STATUS]`` for shell pipelines."""
    import argparse

    from trace_core.config import load_params
    from trace_core.env import quiet_environment

    quiet_environment()
    parser = argparse.ArgumentParser(prog="python -m trace_core.tracking", description=main.__doc__)
    parser.add_argument("action", choices=["start", "end"])
    parser.add_argument("run_id", nargs="?", default="")
    parser.add_argument("status", nargs="?", default="FINISHED", choices=["FINISHED", "FAILED", "KILLED"])
    parser.add_argument("-p", "--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.action == "start":
        sys.stdout.write(start_pipeline(params, reuse=False) + "\n")
    else:
        end_pipeline(params, args.run_id, args.status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
