"""`mlsd simulate`, `mlsd scenarios`, `mlsd ingest`: the world lands data, the gate checks it."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import typer

from mlsd.console import console


class WorldName(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def simulate(
    world: WorldName = typer.Argument(..., help="Which world to simulate."),
    days: int | None = typer.Option(
        None, "--days", min=1, help="Days to simulate (default: simulator.days)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed (default: simulator.seed)."),
    start: dt.datetime | None = typer.Option(
        None, "--start", formats=["%Y-%m-%d"], help="First day (default: simulator.start_date)."
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help="Drift scenario (see `mlsd scenarios`)."
    ),
) -> None:
    """Simulate days of a world and land its raw batches in the landing zone."""
    from rich.progress import Progress

    from mlsd.settings import Settings
    from simulator import run_simulation

    settings = Settings()
    n_days = days or settings.simulator.days
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {world.value}", total=n_days)
        try:
            summary = run_simulation(
                settings,
                world.value,
                days=n_days,
                seed=settings.simulator.seed if seed is None else seed,
                start=start.date() if start else None,
                scenario=scenario,
                on_day=lambda _day: progress.advance(task),
            )
        except ValueError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from err
    rows = ", ".join(f"{name} {count:,}" for name, count in summary.rows.items())
    console.print(
        f"[bold]{world.value}[/bold] {summary.first_day} .. {summary.last_day} "
        f"(scenario: {summary.scenario.name}): {len(summary.batches)} batches landed in "
        f"{settings.raw_dir / world.value}; rows: {rows}"
    )
    if summary.fraud_rate is not None:
        console.print(f"true fraud rate: {summary.fraud_rate:.3%}")


def scenarios() -> None:
    """List the drift scenarios the simulator knows."""
    from rich.table import Table

    from simulator.scenarios import SCENARIOS

    table = Table(title="drift scenarios")
    for column in ("world", "name", "kind", "what changes"):
        table.add_column(column, overflow="fold")
    for s in SCENARIOS.values():
        table.add_row(s.world, s.name, s.kind, s.summary)
    console.print(table)


def ingest(
    world: WorldName | None = typer.Option(None, "--world", help="Only this world (default: all)."),
) -> None:
    """Validate every landed batch (Great Expectations); accept it into the offline store or quarantine it."""
    from rich.progress import Progress

    from mlsd.settings import Settings
    from pipeline.ingest import ingest as run_ingest

    settings = Settings()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("validating batches", total=None)
        report = run_ingest(
            settings,
            world.value if world else None,
            on_batch=lambda _batch, _status: progress.advance(task),
        )
    print_ingest_report(report)
    if report.quarantined and settings.ingest.fail_on_quarantine:
        raise typer.Exit(1)


def print_ingest_report(report: object) -> None:
    """One line per quarantined batch with its reasons, then the totals."""
    from pipeline.ingest import IngestReport

    assert isinstance(report, IngestReport)
    for batch in report.quarantined:
        # A missing column fails every rule on it; say each reason once.
        reasons = "; ".join(dict.fromkeys(f.describe() for f in batch.failures))
        console.print(f"[red]quarantined[/red] {batch.batch_id}: {reasons}")
    console.print(
        f"ingest: {len(report.accepted)} batches accepted ({report.rows_accepted:,} rows), "
        f"{len(report.quarantined)} quarantined"
    )


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("scenarios")(scenarios)
    app.command("ingest")(ingest)
