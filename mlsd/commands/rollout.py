"""`mlsd rollout start|status|promote|rollback fraud|recsys`: canary, promote, roll back."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from mlsd.console import EXIT_CODES_HELP, ExitCode, console, fail, print_json, table

if TYPE_CHECKING:
    from mlsd.settings import Settings
    from serving.admin import AdminClient

app = typer.Typer(
    help="Canary a challenger, promote it or roll it back (through the router).",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)


class Product(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def _admin(settings: Settings) -> AdminClient:
    """The lab's router admin API, or one line and exit 2 when the router does not answer."""
    from mlsd.netutil import http_ok
    from serving.admin import AdminClient

    base = f"http://{settings.client_host}:{settings.router.port}"
    if not http_ok(f"{base}/healthz"):
        fail(f"no router at {base}: start the stack with `mlsd up` (after `mlsd train`)")
    return AdminClient.for_lab(settings)


def _call(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An admin call; a refusal (4xx) is one line with the router's reason and exit 1."""
    import httpx

    from serving.admin import AdminError

    try:
        return fn()
    except AdminError as err:
        code = ExitCode.FAILED if err.status_code < 500 else ExitCode.NOT_READY
        fail(f"{what}: the router answered {err.status_code}: {err.detail}", code)
    except httpx.HTTPError as err:
        fail(f"{what}: the router did not answer ({type(err).__name__}: {err})")


def _challenger_or_fail(settings: Settings, product: str, version: int | None) -> int:
    """The version a rollout would canary: --version (it must exist in the registry), else
    the registry's @challenger; otherwise one line saying what to do."""
    from mlsd.registry import CHALLENGER, ModelRegistry

    name = settings.training.model_names()[product]
    registry = ModelRegistry(settings.mlflow_tracking_uri)
    if version is not None:
        if not registry.version_exists(name, str(version)):
            fail(f"{name} has no version {version} in the registry (MLflow)")
        return version
    challenger = registry.version_of(name, CHALLENGER)
    if challenger is None:
        fail(
            f"{name} has no @challenger to canary: train one (`mlsd train {product}`) "
            f"or name a registered version with --version N"
        )
    return int(challenger)


@app.command("start", epilog=EXIT_CODES_HELP)
def start(
    product: Product,
    version: int | None = typer.Option(
        None, "--version", min=1, help="Registered version to canary (default: @challenger)."
    ),
    steps: str = typer.Option("5,25,50,100", "--steps", help="Ramp, in percent of entities."),
    min_step_seconds: float = typer.Option(30.0, "--min-step-seconds", help="Least time per step."),
    max_step_seconds: float = typer.Option(300.0, "--max-step-seconds", help="Deadline of a step."),
    poll_seconds: float = typer.Option(
        5.0, "--poll-seconds", help="How often the verdict is read."
    ),
    shadow_seconds: float = typer.Option(
        0.0,
        "--shadow-seconds",
        help="First a shadow judged by the same guardrails (copies only), lasting at least "
        "this; 0: none.",
    ),
) -> None:
    """Run the rollout flow (a Prefect flow run on the lab's server): ramp the canary, judge
    each step, promote or roll back."""
    from mlsd.settings import Settings

    settings = Settings()
    try:
        ramp = [float(s) for s in steps.split(",") if s.strip()]
        from serving.rollout import RampPlan

        RampPlan(tuple(ramp), min_step_seconds, max_step_seconds, poll_seconds, shadow_seconds)
    except ValueError as err:
        fail(f"--steps / --*-seconds: {err}")
    from mlsd.commands.lab_servers import use_lab_servers

    use_lab_servers(settings)
    _admin(settings).close()
    challenger = _challenger_or_fail(settings, product.value, version)
    from serving.rollout import rollout

    console.print(f"{product.value}: canary of v{challenger}, steps {steps} % (a Prefect flow run)")
    state = rollout(
        product.value,
        version=challenger,
        steps=ramp,
        min_step_seconds=min_step_seconds,
        max_step_seconds=max_step_seconds,
        poll_seconds=poll_seconds,
        shadow_seconds=shadow_seconds,
        return_state=True,
    )
    if not state.is_completed():
        fail(f"{product.value}: the rollout flow {state.name}: {state.message}", ExitCode.FAILED)
    result: dict[str, Any] = state.result()
    if result["result"] == "stood_aside":
        fail(f"{product.value}: v{challenger} not rolled out: {result['reason']}", ExitCode.FAILED)
    console.print(
        table(
            "shadow (0 %) and canary steps" if shadow_seconds else "canary steps",
            ["percent", "verdict", "seconds", "reasons"],
            [
                (
                    f"{s['percent']:g} %",
                    s["decision"],
                    f"{s['seconds']:.0f}",
                    "; ".join(s["reasons"]),
                )
                for s in result["steps"]
            ],
        )
    )
    if result["result"] != "promoted":
        fail(f"{product.value}: v{challenger} rolled back", ExitCode.ROLLED_BACK)
    console.print(f"[green]{product.value}: v{challenger} promoted to @champion[/green]")


@app.command("status", epilog=EXIT_CODES_HELP)
def status(
    product: Product,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The product's routing: champion, challenger, split, shadow, canary, and its history."""
    from mlsd.commands.status import render_products
    from mlsd.settings import Settings

    with _admin(Settings()) as admin:
        routing = _call("status", lambda: admin.status(product.value))
    if as_json:
        print_json(routing)
        return
    console.print(render_products({product.value: routing}))


@app.command("promote", epilog=EXIT_CODES_HELP)
def promote(product: Product, reason: str = typer.Option("promoted by hand", "--reason")) -> None:
    """The challenger becomes champion now (registry alias and routing)."""
    with _admin(_settings()) as admin:
        answer = _call("promote", lambda: admin.promote(product.value, reason))
    _print_answer(answer)


@app.command("rollback", epilog=EXIT_CODES_HELP)
def rollback(
    product: Product, reason: str = typer.Option("rolled back by hand", "--reason")
) -> None:
    """Withdraw the challenger, or return @champion to the previous version."""
    with _admin(_settings()) as admin:
        answer = _call("rollback", lambda: admin.rollback(product.value, reason))
    _print_answer(answer)


def _settings() -> Settings:
    from mlsd.settings import Settings

    return Settings()


def _print_answer(answer: dict[str, Any]) -> None:
    routing = answer.get("routing", {})
    champion = routing.get("champion")
    console.print(
        f"{answer.get('product')}: {answer.get('action')}; champion now "
        f"{'-' if champion is None else f'v{champion}'}"
    )
