"""`mlsd train fraud|recsys`: run a training flow and show what the registration gate decided."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from mlsd.console import EXIT_CODES_HELP, ExitCode, console, fail, table


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
    from mlsd.commands.lab_servers import use_lab_servers
    from mlsd.settings import Settings

    settings = Settings()
    # Flow runs go to the lab's Prefect server (they show in its UI), versions to its MLflow.
    use_lab_servers(settings)
    parameters: dict[str, object] = {"seed": seed}
    if shuffle_labels:
        if model is not ModelName.fraud:
            fail("--shuffle-labels applies to the fraud model only")
        parameters["shuffle_labels"] = True
    if via_deployment:
        from prefect.deployments import run_deployment

        from pipeline.deployments import DEPLOYMENT_NAMES

        with console.status(f"running deployment {DEPLOYMENT_NAMES[model]}"):
            run: Any = run_deployment(DEPLOYMENT_NAMES[model], parameters=parameters, timeout=1800)
        state = run.state
        console.print(f"flow run {run.name}: {state.name if state else 'unknown'}")
        if state is None or not state.is_completed():
            fail(f"flow run {run.name} ended {state.name if state else 'unknown'}", ExitCode.FAILED)
        if state.name == "Refused":
            fail(f"{model.value}: {state.message}", ExitCode.MODEL_REFUSED)
        return
    if model is ModelName.fraud:
        from pipeline.train_fraud import train_fraud

        outcome: dict[str, Any] = train_fraud(**parameters)  # type: ignore[call-overload]
    else:
        from pipeline.train_recsys import train_recsys

        outcome = train_recsys(**parameters)  # type: ignore[call-overload]
    print_outcome(outcome)
    if outcome["decision"] == "rejected":
        raise typer.Exit(ExitCode.MODEL_REFUSED)


def print_outcome(outcome: dict) -> None:
    """The metrics as a table, then the verdict as the last line (what a person reads)."""
    champion = outcome.get("champion_metrics") or {}
    names = [k for k in outcome["metrics"] if not k.startswith("retrieval_recall_at_")]
    console.print(
        table(
            f"{outcome['model_name']} v{outcome['version']}: metrics on the validation window",
            ["metric", "this version", "champion (same window)"],
            [
                (k, f"{outcome['metrics'][k]:.4f}", f"{champion[k]:.4f}" if k in champion else None)
                for k in names
            ],
        )
    )
    aliases = ", ".join(f"@{a} = v{v}" for a, v in sorted(outcome["aliases_after"].items()))
    console.print(f"aliases now: {aliases or 'none'}")
    decision = outcome["decision"]
    what = {
        "champion": "[green]accepted as @champion[/green]",
        "challenger": "[cyan]accepted as @challenger[/cyan]",
        "rejected": "[red]REFUSED by the registration gate[/red] (no alias moved)",
    }[decision]
    console.print(
        f"[bold]{outcome['model_name']} v{outcome['version']}[/bold]: {what}: "
        f"{'; '.join(outcome['reasons'])}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EXIT_CODES_HELP)(train)
