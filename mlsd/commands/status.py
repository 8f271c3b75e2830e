"""`mlsd status`: what the lab runs, as tables for people (`--json` for machines): components,
registry aliases and their moves, the router's routing and its history, the router's counters.

The routing views are also what `mlsd rollout status` shows for one product."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Group
from rich.table import Column

from mlsd.console import (
    EXIT_CODES_HELP,
    console,
    human_bytes,
    human_duration,
    human_time,
    print_json,
    table,
    timeline,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mlsd.settings import Settings
    from mlsd.stack import ComponentStatus


@dataclass(frozen=True)
class StatusSection:
    """One block of `mlsd status`: data for --json, and how to show that data to a person.

    A part of the lab adds a section to STATUS_SECTIONS below: `collect` gets the settings and
    the component rows, returns JSON-able data (None to leave the section out), and `render`
    draws it (use `mlsd.console.table` / `timeline`, so it fits 80 columns).
    """

    key: str
    collect: Callable[[Settings, list[ComponentStatus]], Any]
    render: Callable[[Any], RenderableType]


_STATE_COLOURS = {"healthy": "green", "running": "green", "restarting": "yellow"}


def _collect_components(_settings: Settings, rows: list[ComponentStatus]) -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "state": r.state,
            "pid": r.pid,
            "port": r.port,
            "url": r.url,
            "uptime_seconds": None if r.uptime_seconds is None else round(r.uptime_seconds, 1),
            "restarts": r.restarts,
            "rss_bytes": r.rss_bytes,
            "pss_bytes": r.pss_bytes,
            "log_file": str(r.log_file),
        }
        for r in rows
    ]


def _render_components(data: list[dict[str, Any]]) -> RenderableType:
    from rich.text import Text

    return table(
        "local stack",
        [
            Column("component", no_wrap=True),
            "health",
            Column("up", no_wrap=True),
            Column("restarts", justify="right"),
            Column("memory", justify="right", no_wrap=True),
            Column("url", overflow="fold"),
        ],
        [
            (
                row["name"],
                Text(row["state"], style=_STATE_COLOURS.get(row["state"], "red")),
                human_duration(row["uptime_seconds"]),
                row["restarts"],
                human_bytes(row["pss_bytes"]) if row["pid"] else None,
                row["url"],
            )
            for row in data
        ],
    )


def _healthy(rows: list[ComponentStatus], name: str) -> bool:
    return any(r.name == name and r.state == "healthy" for r in rows)


def _collect_models(settings: Settings, rows: list[ComponentStatus]) -> Any:
    """Aliases of each registered model, and its latest alias moves, from the lab's MLflow."""
    if not _healthy(rows, "mlflow"):
        return None
    from mlsd.registry import ModelRegistry

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    return {name: registry.describe(name) for name in settings.training.model_names().values()}


def _render_models(data: dict[str, Any]) -> RenderableType:
    aliases = table(
        "registry (MLflow)",
        ["model", "aliases"],
        [
            (name, ", ".join(f"@{a} = v{v}" for a, v in sorted(info["aliases"].items())))
            for name, info in data.items()
        ],
    )
    moves = timeline(
        "alias moves (latest)",
        [
            (
                e["at"],
                f"{name} @{e['alias']}",
                (f"-> v{e['version']}" if e["version"] else "removed")
                + (f" (was v{e['previous']})" if e.get("previous") else "")
                + (f": {e['reason']}" if e.get("reason") else ""),
            )
            for name, info in data.items()
            for e in info["history"][-3:]
        ],
    )
    return Group(aliases, moves) if moves.row_count else aliases


def _collect_routing(settings: Settings, rows: list[ComponentStatus]) -> Any:
    """The router's view: which version serves each product, and any split, shadow or canary."""
    if not _healthy(rows, "router"):
        return None
    from serving.admin import AdminClient

    try:
        with AdminClient.for_lab(settings) as admin:
            return admin.call("GET", "/admin/status")
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def traffic_summary(routing: dict[str, Any]) -> str:
    """Who gets what, in words: 'canary: 25 % to v3', 'experiment ab1 (metric ctr): 50 % ...'."""
    parts = []
    split = routing.get("split")
    challenger = routing.get("challenger")
    if split:
        percent = f"{split['challenger_percent']:g} % to v{challenger}"
        if split["kind"] == "canary":
            parts.append(f"canary: {percent}")
        else:
            metric = f" (metric {split['metric']})" if split.get("metric") else ""
            parts.append(f"experiment {split['name']}{metric}: {percent}")
    if routing.get("shadow"):
        parts.append(f"shadow: v{challenger} sees {routing.get('shadow_percent', 100):g} %")
    return "; ".join(parts) or "all to the champion"


def render_products(products: dict[str, dict[str, Any]]) -> RenderableType:
    """The routing of each product, then its history as a timeline."""
    routing = table(
        "routing (router)",
        ["product", "champion", "challenger", "traffic", "loaded"],
        [
            (
                p,
                f"v{r['champion']}" if r.get("champion") is not None else None,
                f"v{r['challenger']}" if r.get("challenger") is not None else None,
                traffic_summary(r),
                ", ".join(f"v{v}" for v in r.get("loaded", [])),
            )
            for p, r in products.items()
        ],
    )
    open_breakers = [
        (model, state)
        for r in products.values()
        for model, state in (r.get("breakers") or {}).items()
        if state != "closed"
    ]
    history = timeline(
        "routing history (latest 10)",
        [
            (
                e["at"],
                f"{p} {e['action']}",
                f"champion {_version(e.get('champion'))}, challenger {_version(e.get('challenger'))}"
                + (f": {e['detail']}" if e.get("detail") else ""),
            )
            for p, r in products.items()
            for e in r.get("history", [])
        ],
    )
    parts: list[RenderableType] = [routing]
    if open_breakers:
        parts.append(table("circuit breakers not closed", ["model", "state"], open_breakers))
    if history.row_count:
        parts.append(history)
    return Group(*parts)


def _version(value: object) -> str:
    return "-" if value is None else f"v{value}"


def _render_routing(data: dict[str, Any]) -> RenderableType:
    if "error" in data:
        return f"[red]router admin API:[/red] {data['error']}"
    parts: list[RenderableType] = [render_products(data.get("products", {}))]
    counters: list[tuple[str, object]] = [
        (f"requests {k}", f"{v:,}") for k, v in sorted((data.get("requests") or {}).items())
    ]
    log = data.get("prediction_log") or {}
    if log:
        counters.append(
            (
                f"prediction log ({log.get('type', '?')})",
                ", ".join(f"{k} {v:,}" for k, v in log.items() if isinstance(v, int)),
            )
        )
    shadow = data.get("shadow") or {}
    if shadow:
        counters.append(
            (
                "shadow copies",
                ", ".join(f"{k} {v:,}" for k, v in shadow.items() if isinstance(v, int)),
            )
        )
    popularity = data.get("popularity") or {}
    if popularity:
        counters.append(
            (
                "popularity fallback",
                f"{popularity.get('items', 0)} items from {popularity.get('source')}, "
                f"updated {human_time(popularity.get('updated_at'))}",
            )
        )
    registry = data.get("registry") or {}
    if registry.get("error"):
        counters.append(("registry", f"unreachable: {registry['error']}"))
    parts.append(table("router counters", ["what", Column("count", overflow="fold")], counters))
    return Group(*parts)


def _collect_world(settings: Settings, rows: list[ComponentStatus]) -> Any:
    from mlsd.commands.world import collect_world

    return collect_world(settings, rows)


def _render_world(data: Any) -> RenderableType:
    from mlsd.commands.world import render_world

    return render_world(data)


def _collect_monitoring(settings: Settings, rows: list[ComponentStatus]) -> Any:
    from mlsd.commands.monitor import collect_monitoring

    return collect_monitoring(settings, rows)


def _render_monitoring(data: Any) -> RenderableType:
    from mlsd.commands.monitor import render_monitoring

    return render_monitoring(data)


STATUS_SECTIONS: list[StatusSection] = [
    StatusSection("components", _collect_components, _render_components),
    StatusSection("world", _collect_world, _render_world),
    StatusSection("models", _collect_models, _render_models),
    StatusSection("routing", _collect_routing, _render_routing),
    StatusSection("monitoring", _collect_monitoring, _render_monitoring),
]


def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show what the local stack runs: health, memory, registry aliases, routing and its history."""
    from mlsd.settings import Settings
    from mlsd.stack import Supervisor

    settings = Settings()
    supervisor = Supervisor.from_settings(settings)
    rows = supervisor.status()
    watchdog = supervisor.watchdog_record()
    watchdog_pid = watchdog.pid if watchdog is not None and supervisor.is_up(watchdog) else None
    data: dict[str, Any] = {"watchdog_pid": watchdog_pid}
    for section in STATUS_SECTIONS:
        collected = section.collect(settings, rows)
        if collected is not None:
            data[section.key] = collected
    if as_json:
        print_json(data)
        return
    if not rows:
        console.print("the local stack is not running: `mlsd up` starts it")
        return
    for section in STATUS_SECTIONS:
        if section.key in data:
            console.print(section.render(data[section.key]))
    if watchdog_pid is None:
        console.print("[yellow]watchdog not running[/yellow]: crashed components stay down")
    else:
        console.print(f"watchdog pid {watchdog_pid}; logs in {supervisor.logs_dir}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EXIT_CODES_HELP)(status)
