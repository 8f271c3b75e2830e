"""`mlsd traffic start|stop` and `mlsd drift inject|clear`: steer the running world (the stack
component `world`) through its control API on 127.0.0.1; and the world's block of `mlsd status`."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from mlsd.console import console

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mlsd.settings import Settings
    from mlsd.stack import ComponentStatus

traffic_app = typer.Typer(
    help="Live requests from the world to the router (the world must be running: `mlsd up`).",
    no_args_is_help=True,
)
drift_app = typer.Typer(
    help="Switch the running world to a drift scenario from now on, or back.",
    no_args_is_help=True,
)


class Product(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


class WorldNotRunning(RuntimeError):
    pass


def world_call(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    """One call to the world's control API; `WorldNotRunning` when nothing answers, and a
    `ValueError` with the API's own message on a 4xx."""
    import httpx

    try:
        response = httpx.request(
            method, f"{settings.world_url}{path}", timeout=10.0, trust_env=False, **kwargs
        )
    except httpx.HTTPError as err:
        raise WorldNotRunning(
            f"the world is not running (nothing answers at {settings.world_url}): `mlsd up` "
            "starts it as the stack component `world`"
        ) from err
    if response.status_code >= 400:
        detail = response.json().get("detail", response.text)
        if isinstance(detail, list):  # FastAPI's validation errors: name each field
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in detail
            )
        raise ValueError(str(detail))
    return response.json()


def _call(method: str, path: str, **kwargs: Any) -> Any:
    from mlsd.settings import Settings

    try:
        return world_call(Settings(), method, path, **kwargs)
    except (WorldNotRunning, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from err


@traffic_app.command("start")
def traffic_start(
    rps: float | None = typer.Option(
        None, "--rps", min=0, max=500, help="Fraud requests per second [default: world.fraud_rps]."
    ),
    recs_rps: float | None = typer.Option(
        None, "--recs-rps", min=0, max=500, help="Recommendation requests per second."
    ),
) -> None:
    """Send a sample of the world's transactions and sessions to the router, at their simulated time."""
    body = {k: v for k, v in {"fraud_rps": rps, "recs_rps": recs_rps}.items() if v is not None}
    traffic = _call("PUT", "/traffic", json=body)
    console.print(
        f"traffic on: {traffic['fraud_rps']:g} fraud req/s, {traffic['recs_rps']:g} recs req/s"
    )


@traffic_app.command("stop")
def traffic_stop() -> None:
    """Stop the live requests (the clock, late labels and landing go on)."""
    _call("DELETE", "/traffic")
    console.print("traffic off")


def _check_scenario(product: str, scenario: str) -> None:
    from simulator.scenarios import SCENARIOS

    known = sorted(s.name for s in SCENARIOS.values() if s.world == product)
    if scenario not in known:
        console.print(
            f"[red]error:[/red] unknown {product} scenario {scenario!r}; known: {', '.join(known)} "
            "(`mlsd scenarios` says what each changes)"
        )
        raise typer.Exit(2)


@drift_app.command("inject")
def drift_inject(
    product: Product,
    scenario: str = typer.Option(..., "--scenario", help="A scenario of this world."),
) -> None:
    """The world's live traffic and the batches it lands switch to SCENARIO from now on."""
    _check_scenario(product.value, scenario)
    answer = _call("PUT", f"/drift/{product.value}", json={"scenario": scenario})
    console.print(
        f"{product.value}: [bold]{answer['scenario']}[/bold] ({answer['kind']}) from simulated "
        f"{answer['simulated_at'][:19]}: {answer['summary']}"
    )


@drift_app.command("clear")
def drift_clear(
    product: Product | None = typer.Argument(None, help="One world [default: both]."),
) -> None:
    """Back to the world as it normally is."""
    for p in [product] if product else list(Product):
        answer = _call("DELETE", f"/drift/{p.value}")
        console.print(f"{p.value}: {answer['previous']} -> none")


# ---- `mlsd status` ---------------------------------------------------------------------------


def collect_world(settings: Settings, rows: list[ComponentStatus]) -> Any:
    if not any(r.name == "world" and r.state == "healthy" for r in rows):
        return None
    try:
        return world_call(settings, "GET", "/status")
    except (WorldNotRunning, ValueError) as err:
        return {"error": str(err)}


def render_world(data: Any) -> RenderableType:
    from rich.table import Table

    table = Table(title="world (simulated)")
    for column in ("world", "scenario", "sent", "ok", "errors", "last day landed"):
        table.add_column(column)
    if "error" in data:
        table.add_row("-", "-", "-", "-", data["error"], "-")
        return table
    clock, traffic = data["clock"], data["traffic"]
    table.caption = (
        f"clock {clock['simulated_now'][:16].replace('T', ' ')} (1 day = "
        f"{clock['seconds_per_day']:g} s); traffic "
        + (
            f"on: {traffic['fraud_rps']:g} fraud + {traffic['recs_rps']:g} recs req/s"
            if traffic["on"]
            else "off (`mlsd traffic start`)"
        )
        + f"; labels posted {data['labels']['posted']}, pending {data['labels']['pending']}"
    )
    for product, scenario in data["scenarios"].items():
        errors = sum(v for k, v in data["errors"].items() if k.startswith(f"{product}:"))
        table.add_row(
            product,
            scenario,
            str(data["sent"].get(product, 0)),
            str(data["ok"].get(product, 0)),
            str(errors),
            data["last_landed"].get(product, "-"),
        )
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(traffic_app, name="traffic")
    app.add_typer(drift_app, name="drift")
