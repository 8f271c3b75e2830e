"""`mlsd rollout start|status|promote|rollback fraud|recsys`: canary, promote, roll back."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from mlsd.console import console

app = typer.Typer(
    help="Canary a challenger, promote it or roll it back (through the router).",
    no_args_is_help=True,
)


class Product(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def _admin() -> object:
    from mlsd.settings import Settings
    from serving.admin import AdminClient

    return AdminClient.for_lab(Settings())


def _call(what: str, fn: object) -> dict:
    try:
        return fn()  # type: ignore[operator]
    except Exception as err:
        console.print(f"[red]{what} failed:[/red] {err}")
        raise typer.Exit(1) from err


@app.command("start")
def start(
    product: Product,
    version: int | None = typer.Option(
        None, "--version", help="Version to canary [default: @challenger]."
    ),
    steps: str = typer.Option("5,25,50,100", "--steps", help="Ramp, in percent of entities."),
    min_step_seconds: float = typer.Option(30.0, "--min-step-seconds", help="Least time per step."),
    max_step_seconds: float = typer.Option(300.0, "--max-step-seconds", help="Deadline of a step."),
    poll_seconds: float = typer.Option(
        5.0, "--poll-seconds", help="How often the verdict is read."
    ),
) -> None:
    """Run the rollout flow: ramp the canary, judge each step, promote or roll back."""
    from serving.rollout import rollout

    ramp = [float(s) for s in steps.split(",") if s.strip()]
    result = rollout(
        product.value,
        version=version,
        steps=ramp,
        min_step_seconds=min_step_seconds,
        max_step_seconds=max_step_seconds,
        poll_seconds=poll_seconds,
    )
    colour = "green" if result["result"] == "promoted" else "red"
    console.print(f"[{colour}]{product.value}: {result['result']}[/{colour}]")
    for step in result["steps"]:
        console.print(
            f"  {step['percent']:>5g} %  {step['decision']:<8}  {step['seconds']:>6.0f} s  {'; '.join(step['reasons'])[:160]}"
        )
    if result["result"] != "promoted":
        raise typer.Exit(4)


@app.command("status")
def status(product: Product) -> None:
    """The product's routing: champion, challenger, split, shadow, canary, history."""
    admin = _admin()
    console.print_json(json.dumps(_call("status", lambda: admin.status(product.value))))  # type: ignore[attr-defined]


@app.command("promote")
def promote(product: Product, reason: str = typer.Option("promoted by hand", "--reason")) -> None:
    """The challenger becomes champion now (registry alias and routing)."""
    admin = _admin()
    answer = _call("promote", lambda: admin.promote(product.value, reason))  # type: ignore[attr-defined]
    console.print(
        f"{product.value}: {answer.get('action')} -> {answer.get('routing', {}).get('champion')}"
    )


@app.command("rollback")
def rollback(
    product: Product, reason: str = typer.Option("rolled back by hand", "--reason")
) -> None:
    """Withdraw the challenger, or return @champion to the previous version."""
    admin = _admin()
    answer = _call("rollback", lambda: admin.rollback(product.value, reason))  # type: ignore[attr-defined]
    console.print(
        f"{product.value}: {answer.get('action')} -> {answer.get('routing', {}).get('champion')}"
    )
