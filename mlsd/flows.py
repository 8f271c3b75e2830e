"""The one process that serves every flow of the lab as a Prefect deployment (the stack's `flows`
component): training (`pipeline.deployments`), and each package that adds deployments of its own
(monitoring, the rollout controller, the world's landing) registers them here.

One process for all of them, not one per package: each Python process that imports Prefect and
the ML libraries costs 300-400 MB, and the stack's memory budget is 3 GB.
"""

from __future__ import annotations

from typing import Any


def lab_deployments() -> list[Any]:
    """Every deployment the lab serves (imported here, so `mlsd --help` stays fast)."""
    from monitoring.deployments import deployments as monitoring_deployments
    from pipeline.deployments import deployments as training_deployments
    from pipeline.landing import deployments as landing_deployments
    from serving.deployments import deployments as rollout_deployments

    return [
        *training_deployments(),
        *landing_deployments(),
        *rollout_deployments(),
        *monitoring_deployments(),
    ]


def serve_lab_flows() -> None:
    """Serve the deployments until stopped, below serving's CPU priority (the flow runs it
    starts inherit it)."""
    from prefect import serve

    from mlsd.settings import Settings
    from serving.runtime import lower_cpu_priority

    lower_cpu_priority(Settings().prefect.flows_nice)

    serve(*lab_deployments(), print_starting_message=True)


if __name__ == "__main__":
    serve_lab_flows()
