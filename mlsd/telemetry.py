"""The switches that keep every library of the stack from phoning home (see shared/STACK.md)."""

from __future__ import annotations

import os

# Every process the lab starts gets these.
TELEMETRY_OFF: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # exactly "true" for MLflow; also stops Prefect's client analytics
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "FEAST_USAGE": "False",
}


def silence_telemetry() -> None:
    """Set the telemetry switches in this process (and so in every child it starts)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
