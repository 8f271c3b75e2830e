"""`mlsd demo`: play everything the lab can do so far, end to end, on embedded defaults."""

from __future__ import annotations

import datetime as dt

import typer

from mlsd.console import console


def demo(
    days: int | None = typer.Option(
        None, "--days", min=2, help="Clean days per world [default: simulator.days]."
    ),
) -> None:
    """Simulate both worlds, land a broken upstream feed, run the quality gate, and summarise."""
    from rich.table import Table

    from mlsd.commands.data import print_ingest_report
    from mlsd.settings import Settings
    from pipeline.ingest import ingest, offline_partitions
    from simulator import run_simulation

    settings = Settings()
    sim = settings.simulator
    n_days = days or sim.days
    console.rule("1. the world lands raw batches")
    runs = []
    for world in ("fraud", "recsys"):
        with console.status(f"simulating {world}: {n_days} days"):
            runs.append(run_simulation(settings, world, days=n_days, seed=sim.seed))
        console.print(f"{world}: {runs[-1].rows}")
    broken_start = sim.start_date + dt.timedelta(days=n_days)
    with console.status("an upstream release breaks the transactions feed (schema-break, 3 days)"):
        broken = run_simulation(
            settings, "fraud", days=3, seed=sim.seed, start=broken_start, scenario="schema-break"
        )
    console.print(f"fraud {broken.first_day}..{broken.last_day}: scenario schema-break landed")

    console.rule("2. the quality gate (Great Expectations) accepts or quarantines each batch")
    with console.status("validating batches"):
        report = ingest(settings)
    print_ingest_report(report)

    console.rule("3. summary")
    table = Table()
    for column in ("world", "event type", "rows accepted", "partitions", "quarantined batches"):
        table.add_column(column)
    for world in ("fraud", "recsys"):
        by_type: dict[str, list] = {}
        for b in report.batches:
            if b.world == world:
                by_type.setdefault(b.event_type, []).append(b)
        for event_type, batches in sorted(by_type.items()):
            accepted = [b for b in batches if b.accepted]
            table.add_row(
                world,
                event_type,
                f"{sum(b.rows for b in accepted):,}",
                str(len(offline_partitions(settings, world, event_type))),
                str(len(batches) - len(accepted)),
            )
    console.print(table)
    fraud_run = runs[0]
    tx, cb = fraud_run.rows.get("transactions", 0), fraud_run.rows.get("chargebacks", 0)
    console.print(
        f"fraud rate: {fraud_run.fraud_rate:.3%} true, {cb / max(tx, 1):.3%} charged back "
        f"(labels arrive {sim.fraud.chargeback_delay_days_mean:.0f} days late on average)"
    )
    console.print(f"quarantine: {settings.quarantine_dir} (each batch with its .validation.json)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
