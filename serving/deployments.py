"""The rollout flow as a Prefect deployment: a challenger the gate registered
(`mlsd.challenger.registered`) is shadowed, then canaried, with no one at the keyboard.

The ramp's pace comes from the `rollout` settings (a fast lab profile by default, so the whole
loop fits the issue's targets on 2 cores); one rollout at a time per deployment.
"""

from __future__ import annotations

from typing import Any

from mlsd.events import CHALLENGER_REGISTERED, LAB_TAG


def deployments() -> list[Any]:
    from prefect.events import DeploymentEventTrigger

    from mlsd.settings import Settings
    from serving.rollout import rollout

    cfg = Settings().rollout
    return [
        rollout.to_deployment(
            name="rollout",
            description="Shadow, then canary-ramp a registered challenger; promote or roll back.",
            triggers=[
                DeploymentEventTrigger(
                    name="roll out a registered challenger",
                    expect={CHALLENGER_REGISTERED},
                    match={"prefect.resource.id": "mlsd.model.*"},
                    parameters={
                        "product": "{{ event.resource.name }}",
                        "version": "{{ event.payload.version }}",
                        "steps": list(cfg.steps),
                        "min_step_seconds": cfg.min_step_seconds,
                        "max_step_seconds": cfg.max_step_seconds,
                        "poll_seconds": cfg.poll_seconds,
                        "shadow_seconds": cfg.shadow_seconds,
                    },
                )
            ],
            concurrency_limit=1,
            tags=[LAB_TAG, "rollout"],
        )
    ]
