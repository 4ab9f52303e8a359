"""Process environment: telemetry off for every tool, quiet progress bars in CI."""

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


def quiet_environment() -> None:
    """Switch analytics/telemetry off (values already set by the user are kept)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
