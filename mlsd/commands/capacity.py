"""`mlsd capacity --rps N --p99-ms M`: replicas, cores and memory from this stack's benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from mlsd.console import console


def capacity(
    rps: float = typer.Option(..., "--rps", help="Requests per second to serve."),
    p99_ms: float = typer.Option(..., "--p99-ms", help="p99 latency target through the router."),
    product: str = typer.Option("fraud", "--product", help="fraud | recsys"),
    spare: int = typer.Option(1, "--spare", help="Spare replicas per component (N+spare)."),
    results: Path | None = typer.Option(
        None, "--results", help="Recorded benchmarks [default: benchmarks/results/]."
    ),
) -> None:
    """Replicas per component, cores and memory for a rate and a p99, from `make bench`."""
    from rich.table import Table

    from mlsd.capacity import CapacityError, load_bench, plan_capacity
    from mlsd.walk.runner import BENCH_RESULTS

    try:
        plan = plan_capacity(rps, p99_ms, product, load_bench(results or BENCH_RESULTS), spare)
    except CapacityError as err:
        console.print(f"[red]cannot answer:[/red] {err}", highlight=False)
        raise typer.Exit(2) from err
    table = Table(
        title=f"{product}: {plan.rps:,.0f} req/s at p99 <= {plan.p99_ms:g} ms",
        title_justify="left",
    )
    for column, justify in (
        ("component", "left"),
        ("replicas", "right"),
        ("cores each", "right"),
        ("cores", "right"),
        ("memory (GiB)", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in plan.components:
        table.add_row(
            c.name,
            str(c.replicas),
            f"{c.cores_each:g}",
            f"{c.cores:g}",
            f"{c.memory_mib / 1024:.1f}",
        )
    table.add_row(
        "total",
        str(plan.replicas),
        "",
        f"{plan.cores:g}",
        f"{plan.memory_mib / 1024:.1f}",
        style="bold",
    )
    console.print(table)
    console.print(
        f"per replica: {plan.per_replica_rps:g} req/s at p99 {plan.per_replica_p99_ms:.1f} ms",
        highlight=False,
    )
    for c in plan.components:
        console.print(f"  {c.name}: {c.why}", highlight=False)
    console.print("[bold]assumptions[/bold]")
    for line in plan.assumptions:
        console.print(f"  - {line}", highlight=False)
    console.print("[bold]where this model stops being valid[/bold]")
    for line in plan.limits:
        console.print(f"  - {line}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity)
