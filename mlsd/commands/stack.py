"""`mlsd up`, `mlsd down`: the local stack in the background, watched and restarted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from mlsd.console import EXIT_CODES_HELP, ExitCode, console, fail

if TYPE_CHECKING:
    from mlsd.settings import Settings


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
        fail("profile k8s runs on a cluster: use `make kind-up`.")
    components = stack_components(settings)
    try:
        if only:
            components = with_dependencies(components, only)
    except StackError as err:
        fail(str(err))
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
        if records:
            supervisor.ensure_watchdog()  # what did start stays up, and is watched
        fail(str(err), ExitCode.FAILED)
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
        f"watchdog pid {watchdog.pid} restarts crashed components (logs: {supervisor.logs_dir})",
        soft_wrap=True,
    )
    # One unbroken line whatever the terminal's width: pasted, it must set both variables.
    console.print("clients (paste into your shell):")
    console.print(
        f"export MLFLOW_TRACKING_URI={settings.mlflow_tracking_uri} "
        f"PREFECT_API_URL={settings.prefect_api_url}",
        soft_wrap=True,
        highlight=False,
        markup=False,
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


def register(app: typer.Typer) -> None:
    app.command("up", epilog=EXIT_CODES_HELP)(up)
    app.command("down", epilog=EXIT_CODES_HELP)(down)
