"""Commands that run flows or read the registry use the lab's own servers: this checks that
they answer (one clear line and exit 2 when not) and points this process at them, so every flow
run shows in the lab's Prefect UI instead of a temporary Prefect server's."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mlsd.console import fail

if TYPE_CHECKING:
    from mlsd.settings import Settings


def use_lab_servers(settings: Settings) -> None:
    """MLflow and Prefect must answer; then MLFLOW_TRACKING_URI and PREFECT_API_URL name them
    (and Prefect's client retries as settings.prefect.client_max_retries says)."""
    from mlsd.netutil import http_ok

    for what, url in (
        ("MLflow", settings.mlflow_tracking_uri),
        ("Prefect", settings.prefect_api_url),
    ):
        if not http_ok(f"{url}/health"):
            fail(f"no {what} at {url}: start the stack with `mlsd up`")
    os.environ.update(settings.prefect_client_env)
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
