"""The training flows as Prefect deployments that the local stack serves, so a retrain starts by
name (`mlsd train fraud --via-deployment`), by a schedule, or by an event (drift detected)."""

from __future__ import annotations

from typing import Any

from mlsd.events import LAB_TAG, RETRAIN_REQUESTED

# Monitoring's trigger emits this event (resource id `mlsd.model.<name>`); the deployment of that
# model's training flow runs when it arrives. One run at a time per flow: a storm of drift events
# while a retrain runs does not queue a storm of retrains.
RETRAIN_EVENT = RETRAIN_REQUESTED
DEPLOYMENT_NAMES = {"fraud": "train_fraud/train_fraud", "recsys": "train_recsys/train_recsys"}


def yield_to_serving(niceness: int) -> None:
    """Lower this process's CPU priority by `niceness` when it runs a deployment's flow run (a
    subprocess of the lab's flows process); a run started in a terminal is left as it is."""
    from prefect.runtime import deployment

    from mlsd.cpu import lower_cpu_priority

    if niceness and deployment.id:
        lower_cpu_priority(niceness)


def deployments() -> list[Any]:
    from prefect.events import DeploymentEventTrigger

    from mlsd.settings import Settings
    from pipeline.train_fraud import train_fraud
    from pipeline.train_recsys import train_recsys

    maturity = Settings().training.fraud.retrain_label_maturity_days

    def retrain_trigger(model: str) -> DeploymentEventTrigger:
        # A retrain the loop asks for trains and is judged on the recent (drifted) days.
        parameters = {"label_maturity_days": maturity} if model == "fraud" else None
        return DeploymentEventTrigger(
            name=f"retrain {model} on request",
            expect={RETRAIN_EVENT},
            match={"prefect.resource.id": f"mlsd.model.{model}"},
            parameters=parameters,
        )

    return [
        train_fraud.to_deployment(
            name="train_fraud",
            description="Train, evaluate, register and gate the fraud scorer.",
            triggers=[retrain_trigger("fraud")],
            concurrency_limit=1,
            tags=[LAB_TAG, "fraud"],
        ),
        train_recsys.to_deployment(
            name="train_recsys",
            description="Train, evaluate, register and gate the two-stage recommender.",
            triggers=[retrain_trigger("recsys")],
            concurrency_limit=1,
            tags=[LAB_TAG, "recsys"],
        ),
    ]
