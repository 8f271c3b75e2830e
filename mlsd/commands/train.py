"""`mlsd train fraud|recsys`: run a training flow and show what the registration gate decided."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from mlsd.console import console


class ModelName(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def train(
    model: ModelName = typer.Argument(..., help="Which model to train."),
    via_deployment: bool = typer.Option(
        False,
        "--via-deployment",
        help="Start the served Prefect deployment by name (needs `mlsd up`).",
    ),
    shuffle_labels: bool = typer.Option(
        False,
        "--shuffle-labels",
        help="Fraud only: train on shuffled labels, to watch the gate refuse it.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and model fitting."),
) -> None:
    """Train, evaluate, register and gate a model (a Prefect flow run and an MLflow run)."""
    import os

    from mlsd.netutil import http_ok
    from mlsd.settings import Settings

    settings = Settings()
    if not http_ok(f"{settings.mlflow_tracking_uri}/health"):
        console.print(
            f"[red]error:[/red] no MLflow at {settings.mlflow_tracking_uri}: start the stack with `mlsd up`"
        )
        raise typer.Exit(2)
    # Flow runs go to the lab's Prefect server when it runs (they show in its UI).
    if http_ok(f"{settings.prefect_api_url}/health"):
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    parameters: dict[str, object] = {"seed": seed}
    if shuffle_labels:
        if model is not ModelName.fraud:
            raise typer.BadParameter("--shuffle-labels applies to the fraud model only")
        parameters["shuffle_labels"] = True
    if via_deployment:
        from prefect.deployments import run_deployment

        from pipeline.deployments import DEPLOYMENT_NAMES

        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
        with console.status(f"running deployment {DEPLOYMENT_NAMES[model]}"):
            run: Any = run_deployment(DEPLOYMENT_NAMES[model], parameters=parameters, timeout=1800)
        console.print(f"flow run {run.name}: {run.state.name if run.state else 'unknown'}")
        raise typer.Exit(0 if run.state and run.state.is_completed() else 1)
    if model is ModelName.fraud:
        from pipeline.train_fraud import train_fraud

        outcome: dict[str, Any] = train_fraud(**parameters)  # type: ignore[call-overload]
    else:
        from pipeline.train_recsys import train_recsys

        outcome = train_recsys(**parameters)  # type: ignore[call-overload]
    print_outcome(outcome)
    if outcome["decision"] == "rejected":
        raise typer.Exit(3)


def print_outcome(outcome: dict) -> None:
    colour = {"champion": "green", "challenger": "cyan", "rejected": "red"}[outcome["decision"]]
    console.print(
        f"[bold]{outcome['model_name']} v{outcome['version']}[/bold]: [{colour}]{outcome['decision']}[/{colour}]"
        f" — {'; '.join(outcome['reasons'])}"
    )
    shown = {
        k: round(v, 4)
        for k, v in outcome["metrics"].items()
        if not k.startswith("retrieval_recall_at_")
    }
    console.print(shown)
    console.print(f"aliases now: {outcome['aliases_after']}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
