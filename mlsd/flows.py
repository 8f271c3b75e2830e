"""The one process that serves every flow of the lab as a Prefect deployment (the stack's `flows`
component): training (`pipeline.deployments`), and each package that adds deployments of its own
(monitoring, the rollout controller, the world's landing) registers them here.

One process for all of them, not one per package: each Python process that imports Prefect and
the ML libraries costs 300-400 MB, and the stack's memory budget is 3 GB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from mlsd.events import LAB_TAG


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


# Why no automation watches the runs' heartbeats any more (2026-12-07). A run whose process
# dies while the flows process serves is marked Crashed by Prefect's runner itself ("Process
# exited with status code: -9"), which frees its deployment's concurrency slot; runs a dead
# flows process left behind are crashed when it starts again (crash_orphaned_runs; both in
# tests/integration/test_zombie_runs.py). The automation the lab had for it (after each
# heartbeat of a run, another heartbeat or a final state within three) wrote an automation
# bucket for every state event and heartbeat of every run, and fired for finished runs whose
# last heartbeat came after their end (PrefectHQ/prefect#21932). Its writes were those seen
# failing most while Prefect's server stalled for its SQLite busy timeout (60 s), and the one
# transaction seen holding the write lock for over 3 s was its (docs/monitoring.md); no stall
# and no "database is locked" in the demo without it. A lab made before keeps it in its
# Prefect database: the flows process deletes it.
RETIRED_ZOMBIE_AUTOMATION = "mlsd: crash flow runs whose heartbeats stopped"


def delete_retired_automation() -> bool:
    """Delete the heartbeat automation an earlier lab made, if this lab's Prefect has it."""
    from prefect.automations import Automation

    try:
        # Called from sync code, Prefect's sync-compatible read returns the automation itself.
        retired: Any = Automation.read(name=RETIRED_ZOMBIE_AUTOMATION)
    except ValueError:  # Prefect's answer for no automation of that name
        return False
    retired.delete()
    return True


# Prefect's runner starts each flow run as a new interpreter (`python -m prefect.engine`, or
# multiprocessing "spawn" for a flow in memory), which imports the run's libraries again.
# Measured on 2 cores, one at a time: Evidently 4.3 s of CPU, Great Expectations 4.1 s, Feast
# 5.0 s, MLflow 2.1 s; all that the lab's flows use, 12 s and about 500 MB of RSS. The loop's
# monitor and landing runs came every 30-40 s (15-40 s now), so while the demo's world ran the
# flows process took 1.0 of the machine's 1.9 busy cores, and each run 300-600 MB of RSS. Runs are
# forked instead from a server process that imported these once (multiprocessing's forkserver
# with a preload): a run starts with them in memory and shares their pages (`serve_in_memory`
# gives the runner the flows in memory, or it would not use "spawn" at all). Not forked from
# the flows process itself: Prefect chose spawn because its engine deadlocks in a fork of a
# process running the runner's threads (PrefectHQ/prefect#16802); the forkserver is a fresh
# process, one thread, that has only imported (tests/unit/test_flow_preload.py).
# What this costs: a change to a flow's code reaches its runs when the flows process restarts
# (`mlsd down && mlsd up`), as with any in-memory flow; and if the forkserver dies, Python
# reports its runs as exited (code 255) though they may still run.
FLOW_RUN_PRELOAD = (
    "prefect.flow_engine",
    "monitoring.flow",
    "pipeline.landing",
    "pipeline.train_fraud",
    "pipeline.train_recsys",
    "serving.rollout",
    # What those import inside their functions (a preload covers module-level imports only).
    "evidently",
    "evidently.presets",
    "evidently.metrics",
    "evidently.legacy.core",
    "evidently.legacy.calculations.stattests",
    "evidently.ui.storage.local.base",
    "evidently.sdk.models",
    "great_expectations",
    "great_expectations.expectations",
    "mlflow",
    "mlflow.models",
    "feast",
    "sklearn.metrics",
    "scipy.stats",
    "pyarrow.compute",
    "joblib",
)


def fork_flow_runs_from_a_preloaded_server(
    preload: tuple[str, ...] = FLOW_RUN_PRELOAD,
) -> Callable[[], None]:
    """From now on, the flow runs this process starts (`prefect.flow_engine.
    run_flow_in_subprocess`, which the runner calls) are forked from a forkserver that imported
    `preload`, instead of spawned; started here, so its imports overlap the runner's start (a
    run asked for before they end waits for them). Returns what undoes it (for tests).

    Prefect offers no setting for the start method: this replaces the `multiprocessing` its
    engine module reads (checked against prefect 3.8)."""
    import multiprocessing

    import prefect.flow_engine as engine

    if getattr(engine, "multiprocessing", None) is not multiprocessing:
        raise RuntimeError(
            "prefect.flow_engine no longer reads `multiprocessing`: check mlsd.flows"
        )
    server = multiprocessing.get_context("forkserver")
    # Last: what the preload created is frozen once it is all there (mlsd.preload_frozen).
    server.set_forkserver_preload([*preload, "mlsd.preload_frozen"])

    class _ForkedRuns:
        """`multiprocessing` as prefect.flow_engine sees it: its "spawn" is the forkserver."""

        def __getattr__(self, name: str) -> Any:
            return getattr(multiprocessing, name)

        @staticmethod
        def get_context(method: str | None = None) -> Any:
            return server if method == "spawn" else multiprocessing.get_context(method)

    engine.multiprocessing = _ForkedRuns()  # type: ignore[assignment]
    from multiprocessing import forkserver

    forkserver.ensure_running()

    def undo() -> None:
        engine.multiprocessing = multiprocessing
        forkserver._forkserver._stop()  # type: ignore[attr-defined]  # the next one preloads anew
        server.set_forkserver_preload(["__main__"])  # Python's default

    return undo


ORPHAN_MESSAGE = "the flows process that ran it had stopped (found when it started again)"


def crash_orphaned_runs() -> list[str]:
    """Mark Crashed every run of a lab deployment still Pending, Running or Cancelling; the names.

    Called as the flows process starts: it is the only process that executes the lab's
    deployments (locally; on a cluster a worker does, and this is not called), and the runs it
    started died with its previous self. Left Pending or Running, a run holds its deployment's
    slot for ever: measured, after a flows process died on a 503 of a busy Prefect server, every
    later monitor and landing run was cancelled as colliding with it, and the world's days
    stopped landing; a monitor run killed by `mlsd down` kept every later fraud window waiting.

    Crashed frees the slot (tests/integration/test_zombie_runs.py shows it).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    active = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[LAB_TAG]),
                deployment_id=FlowRunFilterDeploymentId(is_null_=False),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=active)),
            )
        )
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message=ORPHAN_MESSAGE))
            crashed.append(run.name)
    return crashed


def serve_lab_flows() -> None:
    """Serve the deployments until stopped, below serving's CPU priority (the flow runs it
    starts inherit it)."""
    from mlsd.cpu import lower_cpu_priority
    from mlsd.settings import Settings
    from mlsd.telemetry import quiet_libraries

    quiet_libraries()  # the runs it starts log MLflow models: no pip warning per model
    settings = Settings()
    lower_cpu_priority(settings.prefect.flows_nice)
    # Serving the flows matters more than either: a later start tries again.
    try:
        if delete_retired_automation():
            print(f"deleted the automation {RETIRED_ZOMBIE_AUTOMATION!r} of an earlier lab")
    except Exception as err:
        print(f"could not look for the heartbeat automation of an earlier lab ({err})")
    try:
        orphans = crash_orphaned_runs()
    except Exception as err:
        print(f"could not look for runs orphaned by a previous flows process ({err})")
    else:
        if orphans:
            print(f"crashed {len(orphans)} run(s) orphaned by a previous flows process: {orphans}")
    fork_flow_runs_from_a_preloaded_server()
    serve_in_memory(lab_deployments(), lab_flows())


def lab_flows() -> dict[str, Any]:
    """The flows whose runs start in memory, by flow name: every flow the lab serves."""
    from monitoring.flow import monitor
    from pipeline.landing import land_day
    from pipeline.train_fraud import train_fraud
    from pipeline.train_recsys import train_recsys
    from serving.rollout import rollout

    return {f.name: f for f in (land_day, rollout, monitor, train_fraud, train_recsys)}


def serve_in_memory(deployments: list[Any], flows: dict[str, Any]) -> None:
    """`prefect.serve(*deployments)`, except that the runs of a deployment whose flow is in
    `flows` start from it in memory, as `flow.serve()` starts them (`run_flow_in_subprocess`,
    forked from the preloaded server), not by `python -m prefect.engine`, a new interpreter
    that loads the flow's file and imports everything again (`prefect.serve` keeps no flow for
    a deployment). Measured under the world's traffic (40 req/s, 2 cores): a monitor run took
    2.4-9.5 s of CPU before, 0.1-0.8 s after; a landing run 21 s before, 10-13 s after (the rest
    is its own work)."""
    import asyncio
    from uuid import UUID

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    # As prefect.serve (no cap on runs), but a run is started when it is due, not up to 10 s
    # before (Prefect's prefetch): started early, a monitor run (every 15 s in the demo) came
    # while the one before still ran and its deployment's limit cancelled it. In both demos
    # measured so, such cancellations ended a 60 s lock of Prefect's SQLite database (its busy
    # timeout) once in the drift act, and no run moved for 67-78 s. The stalls came back
    # later (docs/monitoring.md, "The night's mends"). The runner polls every
    # prefect.runner_poll_seconds (2 s).
    runner = Runner(pause_on_shutdown=True, limit=None, prefetch_seconds=0)
    for deployment in deployments:
        deployment_id = cast("UUID", runner.add_deployment(deployment))  # sync: the id
        if deployment.flow_name in flows:
            # The runner's own map from deployment to flow in memory (what `add_flow` fills).
            runner._deployment_registry.register_flow(deployment_id, flows[deployment.flow_name])
    print(f"serving {len(deployments)} deployments: {', '.join(d.name for d in deployments)}")
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):  # as prefect.serve: a stop, not a failure
        print("stopped")


if __name__ == "__main__":
    serve_lab_flows()
