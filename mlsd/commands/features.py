"""`mlsd features build|apply|materialize`: feature tables, Feast registry, online store."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import typer

from mlsd.console import console

app = typer.Typer(
    help="The feature store: compute feature tables, register them with Feast, load the online store.",
    no_args_is_help=True,
)


class WorldName(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


@app.command("build")
def build(
    world: WorldName | None = typer.Option(None, "--world", help="Only this world (default: all)."),
) -> None:
    """Compute every feature table from the offline store (point-in-time exact, one row per change)."""
    from rich.table import Table

    from features.tables import build as build_tables
    from mlsd.settings import WORLDS, Settings

    settings = Settings()
    with console.status("building feature tables") as status:
        results = build_tables(
            settings,
            [world.value] if world else list(WORLDS),
            on_step=lambda step: status.update(step),
        )
    table = Table(title=f"feature tables in {settings.features_dir / 'tables'}")
    for column in ("world", "clock (latest event)", "view", "rows", "seconds"):
        table.add_column(column)
    for result in results:
        if result.as_of is None:
            table.add_row(
                result.world, "-", "[yellow]no events in the offline store[/yellow]", "", ""
            )
            continue
        for view, rows in result.rows.items():
            table.add_row(
                result.world,
                result.as_of.isoformat(timespec="seconds"),
                view,
                f"{rows:,}",
                f"{result.seconds:.1f}",
            )
    console.print(table)
    for result in results:
        if result.past_rewritten:
            console.print(
                f"[yellow]warning:[/yellow] {result.world}: events before the previous build's clock "
                "changed; materialisation only moves forward, so reset the online store "
                "(`make clean`, or delete the data dir's features/) before serving this world."
            )


@app.command("apply")
def apply() -> None:
    """Register the definitions with Feast (like `feast apply`) and write features/repo/feature_store.yaml."""
    from features.store import (
        FEAST_REPO_DIR,
        online_store_type,
        write_repo_files,
    )
    from features.store import (
        apply as apply_definitions,
    )
    from mlsd.settings import Settings

    settings = Settings()
    with console.status("applying feature definitions (importing Feast takes a few seconds)"):
        report = apply_definitions(settings)
        written = write_repo_files(settings)
    console.print(
        f"applied to project [bold]{settings.features.project}[/bold] "
        f"(online store: {online_store_type(settings)}) in {report.seconds:.1f}s\n"
        f"  entities:   {', '.join(report.entities)}\n"
        f"  views:      {', '.join(report.views)}\n"
        f"  on-demand:  {', '.join(report.on_demand)}\n"
        f"  services:   {', '.join(report.services)}"
    )
    if report.deleted:
        console.print(f"  deleted:    {', '.join(report.deleted)}")
    console.print(
        f"wrote {', '.join(p.name for p in written)}; the Feast CLI works there too: "
        f"cd {FEAST_REPO_DIR} && feast plan"
    )


@app.command("materialize")
def materialize(
    end: dt.datetime | None = typer.Option(
        None,
        "--end",
        formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        help="Load rows up to this UTC time (default: each world's clock, its latest event).",
    ),
    view: list[str] | None = typer.Option(
        None, "--view", help="Only these feature views (default: all)."
    ),
) -> None:
    """Load new feature rows into the online store, continuing from the last run (incremental)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.store import materialize as run_materialize
    from mlsd.settings import Settings

    settings = Settings()
    until = end.replace(tzinfo=dt.UTC) if end is not None and end.tzinfo is None else end
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("materializing", total=None)

        def on_view(name: str, index: int, total: int) -> None:
            progress.update(task, description=f"materializing {name}", completed=index, total=total)

        try:
            reports = run_materialize(settings, end=until, views=view or None, on_view=on_view)
        except KeyError as err:
            console.print(f"[red]error:[/red] {err.args[0]}")
            raise typer.Exit(2) from err
        progress.update(
            task, description="materialized", completed=len(reports), total=len(reports)
        )
    for r in reports:
        if r.skipped:
            console.print(f"  {r.view}: skipped ({r.skipped})")
            continue
        rate = r.rows_scanned / r.seconds if r.seconds else 0.0
        console.print(
            f"  {r.view}: {r.rows_scanned:,} rows up to {r.end:%Y-%m-%d %H:%M:%S} -> "
            f"{r.entities_written:,} entities online in {r.seconds:.2f}s ({rate:,.0f} rows/s)"
        )
