"""The lab's event vocabulary: every step of the loop is a Prefect event with a resource and a time.

A leaf module like `mlsd.settings`: the world, monitoring, training and the rollout controller all
emit through it, and `mlsd watch` and Prefect's own event feed read the same events, so there is
no second event log (ARCHITECTURE.md, "Events are the spine of the timeline"). Prefect is
imported lazily: importing this module costs nothing.

Resources: `mlsd.model.<product>` for what concerns a product's model (windows, retrains,
canaries, aliases) and `mlsd.world.<product>` for the simulated world (drift injected, a day
landed). A registry version, when one is concerned, goes in `related` as
`mlsd.model-version.<product>.<version>`.
"""

from __future__ import annotations

from typing import Any, Literal

Product = Literal["fraud", "recsys"]

# The world.
# The Prefect tag every lab deployment (and so each of its runs) carries: how the flows process
# tells the lab's runs that a dead predecessor left behind (mlsd.flows.crash_orphaned_runs).
LAB_TAG = "mlsd"

DRIFT_INJECTED = "mlsd.drift.injected"
DRIFT_CLEARED = "mlsd.drift.cleared"
BATCH_LANDED = "mlsd.batch.landed"
# Monitoring.
WINDOW_JUDGED = "mlsd.window.judged"
DRIFT_DETECTED = "mlsd.drift.detected"
PERFORMANCE_DROPPED = "mlsd.performance.dropped"
QUALITY_ALERT = "mlsd.quality.alert"
# The retrain trigger (the training deployments listen for RETRAIN_REQUESTED).
RETRAIN_REQUESTED = "mlsd.retrain.requested"
RETRAIN_SUPPRESSED = "mlsd.retrain.suppressed"
# Training and the registration gate.
GATE_VERDICT = "mlsd.gate.verdict"
CHALLENGER_REGISTERED = "mlsd.challenger.registered"
# The rollout controller.
SHADOW_STARTED = "mlsd.shadow.started"
SHADOW_PASSED = "mlsd.shadow.passed"
SHADOW_BREACHED = "mlsd.shadow.breached"
CANARY_STEP_STARTED = "mlsd.canary.step.started"
CANARY_STEP_PASSED = "mlsd.canary.step.passed"
CANARY_STEP_BREACHED = "mlsd.canary.step.breached"
PROMOTED = "mlsd.rollout.promoted"
ROLLED_BACK = "mlsd.rollout.rolled-back"
ROLLOUT_STOOD_ASIDE = "mlsd.rollout.stood-aside"  # an experiment or a person took the traffic
ALIAS_MOVED = "mlsd.alias.moved"

# Every event name above, for `mlsd watch` (Prefect's own flow-run events are read beside them).
LAB_EVENTS: tuple[str, ...] = (
    DRIFT_INJECTED,
    DRIFT_CLEARED,
    BATCH_LANDED,
    WINDOW_JUDGED,
    DRIFT_DETECTED,
    PERFORMANCE_DROPPED,
    QUALITY_ALERT,
    RETRAIN_REQUESTED,
    RETRAIN_SUPPRESSED,
    GATE_VERDICT,
    CHALLENGER_REGISTERED,
    SHADOW_STARTED,
    SHADOW_PASSED,
    SHADOW_BREACHED,
    CANARY_STEP_STARTED,
    CANARY_STEP_PASSED,
    CANARY_STEP_BREACHED,
    PROMOTED,
    ROLLED_BACK,
    ROLLOUT_STOOD_ASIDE,
    ALIAS_MOVED,
)


def model_resource(product: str) -> dict[str, str]:
    return {"prefect.resource.id": f"mlsd.model.{product}", "prefect.resource.name": product}


def world_resource(product: str) -> dict[str, str]:
    return {"prefect.resource.id": f"mlsd.world.{product}", "prefect.resource.name": product}


def version_related(product: str, version: str | int) -> dict[str, str]:
    return {
        "prefect.resource.id": f"mlsd.model-version.{product}.{version}",
        "prefect.resource.role": "model-version",
        "prefect.resource.name": f"{product} v{version}",
    }


def emit(
    event: str,
    resource: dict[str, str],
    payload: dict[str, Any] | None = None,
    related: list[dict[str, str]] | None = None,
) -> Any:
    """Emit one event to the Prefect API this process is configured for (PREFECT_API_URL).

    Returns Prefect's `Event`, or None where this process emits no events (no API configured).
    """
    if event not in LAB_EVENTS:
        raise ValueError(f"unknown lab event {event!r}; the vocabulary is mlsd.events.LAB_EVENTS")
    from prefect.events import emit_event

    return emit_event(event=event, resource=resource, payload=payload or {}, related=related)
