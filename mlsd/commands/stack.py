"""`mlsd up`, `mlsd status`, `mlsd down`: the local stack in the background, watched and restarted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from mlsd.console import console

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mlsd.settings import Settings
    from mlsd.stack import ComponentStatus


def up(
    only: list[str] | None = typer.Option(
        None, "--only", help="Start only this component and what it needs (repeatable)."
    ),
) -> None:
    """Start the local stack in the background (MLflow, Prefect) and wait until it is healthy."""
    from mlsd.settings import Settings
    from mlsd.stack import StackError, Supervisor
    from mlsd.stack.services import serving_components, shadow_components, stack_components
    from mlsd.stack.supervisor import with_dependencies

    settings = Settings()
    if settings.profile == "k8s":
        console.print("[red]error:[/red] profile k8s runs on a cluster: use `make kind-up`.")
        raise typer.Exit(2)
    components = stack_components(settings)
    try:
        if only:
            components = with_dependencies(components, only)
    except StackError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    supervisor = Supervisor.from_settings(settings)
    records: list[Any] = []
    trained: list[str] = []
    try:
        records = _start(supervisor, components, "a first start migrates databases: up to ~30 s")
        if not only:
            # After the core: MLflow must answer before the registry can be asked.
            trained = _trained_products(settings)
            serving = serving_components(settings, trained)
            if serving:
                records += _start(supervisor, serving, "loading the champions")
    except StackError as err:
        console.print(f"[red]error:[/red] {err}")
        if records:
            supervisor.ensure_watchdog()  # what did start stays up, and is watched
        raise typer.Exit(1) from err
    if not only and (shadows := shadow_components(settings, trained)):
        try:
            records += _start(supervisor, shadows, "shadow servers")
        except StackError as err:  # best effort: the answering servers stay up
            console.print(
                f"[yellow]warning:[/yellow] {err}: shadow copies fail until it runs "
                "(`mlsd up` tries again); the answering servers are up"
            )
    watchdog = supervisor.ensure_watchdog()
    for record in records:
        console.print(f"[green]{record.name}[/green] {record.component.url or ''}")
    console.print(
        f"watchdog pid {watchdog.pid} restarts crashed components (logs: {supervisor.logs_dir})"
    )
    console.print(
        f"clients: export MLFLOW_TRACKING_URI={settings.mlflow_tracking_uri} "
        f"PREFECT_API_URL={settings.prefect_api_url}"
    )


def _start(supervisor: Any, components: list[Any], why_slow: str) -> list[Any]:
    names = ", ".join(c.name for c in components)
    with console.status(f"starting {names} ({why_slow})"):
        records: list[Any] = supervisor.start(
            components, on_event=lambda name, what: console.print(f"{name}: {what}")
        )
    return records


def _trained_products(settings: Settings) -> list[str]:
    """The products with a @champion, which get model servers (the registry must answer:
    start the core first)."""
    from mlsd.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    names = settings.training.model_names()
    trained = [p for p, name in names.items() if registry.version_of(name, CHAMPION)]
    for product in sorted(set(names) - set(trained)):
        console.print(
            f"[yellow]{product}[/yellow]: no @champion yet: `mlsd train {product}`, then `mlsd up` again"
        )
    return trained


def down() -> None:
    """Stop everything `mlsd up` started (never a process the lab did not start)."""
    from mlsd.settings import Settings
    from mlsd.stack import Supervisor

    supervisor = Supervisor.from_settings(Settings())
    with console.status("stopping"):
        stopped = supervisor.stop()
    if not stopped:
        console.print("nothing was running")
    for name, count in stopped:
        what = f"{count} process(es) stopped" if count else "already gone"
        console.print(f"{name}: {what}")


# ---- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusSection:
    """One block of `mlsd status`: data for --json, and how to show that data as a table.

    Later parts of the lab (model versions and aliases, traffic split) add a section to
    STATUS_SECTIONS below; `collect` gets the settings and the component rows, returns
    JSON-able data (None to leave the section out), and `render` draws it.
    """

    key: str
    collect: Callable[[Settings, list[ComponentStatus]], Any]
    render: Callable[[Any], RenderableType]


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """3725 -> '1h02m'; None -> '-'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


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
            "log_file": str(r.log_file),
        }
        for r in rows
    ]


def _render_components(data: list[dict[str, Any]]) -> RenderableType:
    from rich.table import Table

    table = Table(title="local stack")
    for column in (
        "component",
        "pid",
        "port",
        "health",
        "uptime",
        "restarts",
        "memory (RSS)",
        "url",
    ):
        table.add_column(column)
    for row in data:
        colour = _STATE_COLOURS.get(row["state"], "red")
        table.add_row(
            row["name"],
            str(row["pid"] or "-"),
            str(row["port"] or "-"),
            f"[{colour}]{row['state']}[/{colour}]",
            human_duration(row["uptime_seconds"]),
            str(row["restarts"]),
            human_bytes(row["rss_bytes"]) if row["pid"] else "-",
            row["url"] or "",
        )
    return table


def _healthy(rows: list[ComponentStatus], name: str) -> bool:
    return any(r.name == name and r.state == "healthy" for r in rows)


def _collect_models(settings: Settings, rows: list[ComponentStatus]) -> Any:
    """Aliases of each registered model, and its latest alias moves, from the lab's MLflow."""
    if not _healthy(rows, "mlflow"):
        return None
    from mlsd.registry import ModelRegistry

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    return {name: registry.describe(name) for name in settings.training.model_names().values()}


def _render_models(data: Any) -> RenderableType:
    from rich.table import Table

    table = Table(title="registry (MLflow)")
    for column in ("model", "aliases", "last alias moves"):
        table.add_column(column, overflow="fold")
    for name, info in data.items():
        aliases = ", ".join(f"@{a}=v{v}" for a, v in sorted(info["aliases"].items())) or "-"
        moves = "\n".join(
            f"{e['at'][5:16]} @{e['alias']} -> {('v' + e['version']) if e['version'] else '(removed)'}"
            for e in info["history"][-3:]
        )
        table.add_row(name, aliases, moves or "-")
    return table


def _collect_routing(settings: Settings, rows: list[ComponentStatus]) -> Any:
    """The router's view: which version serves each product, and any split, shadow or canary."""
    if not _healthy(rows, "router"):
        return None
    from serving.admin import AdminClient

    try:
        return AdminClient.for_lab(settings).call("GET", "/admin/status")
    except Exception as err:
        return {"error": str(err)[:200]}


def _render_routing(data: Any) -> RenderableType:
    import json

    from rich.syntax import Syntax

    return Syntax(json.dumps(data, indent=1, default=str)[:4000], "json", theme="ansi_dark")


STATUS_SECTIONS: list[StatusSection] = [
    StatusSection("components", _collect_components, _render_components),
    StatusSection("models", _collect_models, _render_models),
    StatusSection("routing", _collect_routing, _render_routing),
]


def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show what the local stack runs: health, uptime, restarts and memory per component."""
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
        console.print_json(data=data)
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
        console.print(f"watchdog pid {watchdog_pid}; logs in {supervisor.logs_dir}")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
