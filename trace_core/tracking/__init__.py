"""The one MLflow adapter: runs (parent/child), model registry and the pyfunc wrapper.

- :mod:`~trace_core.tracking.runs`: pipeline parent runs and stage child runs, the only code that
  opens MLflow runs (called by the CLI and the Prefect flows, never by a stage), plus logging into
  the active run;
- :mod:`~trace_core.tracking.registry`: register the trained encoder, champion/challenger promotion;
- :mod:`~trace_core.tracking.pyfunc`: the MLflow pyfunc that serves a saved encoder.

Importing this package imports mlflow: stages import it lazily, inside ``run``.
"""

from __future__ import annotations

from trace_core.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_DECISION,
    TAG_SCORE,
    decide_alias,
    find_model_run,
    promote,
    promote_model,
    register_model,
    version_of_model,
)
from trace_core.tracking.runs import (
    PARENT_ENV,
    TAG_COMMIT,
    TAG_KIND,
    TAG_MODEL_ID,
    TAG_PARAMS_HASH,
    TAG_RUN_NAME,
    TAG_STAGE,
    active_run_id,
    end_pipeline,
    experiment_id,
    git_commit,
    log_artifact,
    log_metrics,
    log_params,
    params_hash,
    run_tags,
    set_tags,
    stage_run,
    start_pipeline,
    store_client,
    track_stage,
    tracking_uri,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PARENT_ENV",
    "TAG_COMMIT",
    "TAG_DECISION",
    "TAG_KIND",
    "TAG_MODEL_ID",
    "TAG_PARAMS_HASH",
    "TAG_RUN_NAME",
    "TAG_SCORE",
    "TAG_STAGE",
    "active_run_id",
    "decide_alias",
    "end_pipeline",
    "experiment_id",
    "find_model_run",
    "git_commit",
    "log_artifact",
    "log_metrics",
    "log_params",
    "params_hash",
    "promote",
    "promote_model",
    "register_model",
    "run_tags",
    "set_tags",
    "stage_run",
    "start_pipeline",
    "store_client",
    "track_stage",
    "tracking_uri",
    "version_of_model",
]
