"""Process environment: telemetry off for every tool, third-party progress bars and INFO logs quiet."""

from __future__ import annotations

import os

TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

#: set (unless verbose) before the libraries are imported: they read these once, at import.
QUIET_OUTPUT: dict[str, str] = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables...", etc.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts" while logging a model
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # "Loading weights", "Writing model shards"
    "TRANSFORMERS_VERBOSITY": "warning",
    "GRPC_VERBOSITY": "ERROR",
}

#: ``TRACE_VERBOSE=1`` (or ``trace --verbose``) keeps third-party INFO logs and progress bars.
VERBOSE_ENV = "TRACE_VERBOSE"


def is_verbose() -> bool:
    """Whether third-party output was asked for (``TRACE_VERBOSE`` set to 1/true/yes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_environment(verbose: bool | None = None) -> None:
    """Switch analytics/telemetry off and, unless verbose, third-party chatter (user values are kept)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    if not (is_verbose() if verbose is None else verbose):
        for key, value in QUIET_OUTPUT.items():
            os.environ.setdefault(key, value)
