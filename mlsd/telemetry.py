"""What the stack's libraries do on their own, switched off: phoning home (see shared/STACK.md),
and the progress bars and INFO chatter they would print into a person's terminal or a log."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

# Every process the lab starts gets these.
QUIET_LIBRARIES: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # exactly "true" for MLflow; also stops Prefect's client analytics
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "FEAST_USAGE": "False",
    # MLflow draws a progress bar for every artifact download (a training run logs a model by
    # downloading it back), and logs its steps at INFO ("Detected uv project", "Waiting up to
    # 300 seconds for model version"): between the demo's tables they read as its output.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


# Switches a person may turn back on to debug (MLflow's server says "Set
# MLFLOW_LOGGING_LEVEL=DEBUG for traceback"): set only where unset. The rest are always set.
CHATTER_SWITCHES = frozenset({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"})


def with_quiet_libraries(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the switches: telemetry always off, the chatter switches where unset."""
    quiet = dict(env)
    for key, value in QUIET_LIBRARIES.items():
        if key in CHATTER_SWITCHES:
            quiet.setdefault(key, value)
        else:
            quiet[key] = value
    return quiet


class _NoPipVersionWarning(logging.Filter):
    """MLflow warns on every model it logs that it found no pip to pin in the model's conda.yaml:
    uv builds the lab's environment without pip, so it always fires and says nothing. (The
    model's requirements are pinned by the training flow; conda.yaml just gets plain `pip`.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to resolve installed pip version" not in record.getMessage()


def quiet_libraries() -> None:
    """Set the switches in this process (and so in every child it starts)."""
    for key, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(key, value)
    environment = logging.getLogger("mlflow.utils.environment")
    if not any(isinstance(f, _NoPipVersionWarning) for f in environment.filters):
        environment.addFilter(_NoPipVersionWarning())


def quiet_gx_context() -> Any:
    """A Great Expectations context in memory, quiet: no analytics, no progress bars, and not
    the INFO line GX logs for each such context (its temporary docs folder)."""
    quiet_libraries()  # before the GX import, which reads the analytics switch
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets this logger to INFO itself, at import: set after it.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # Progress bars would draw over the CLI's own progress display and fill the flows' logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context
