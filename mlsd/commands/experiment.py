"""`mlsd experiment fraud|recsys`: the running A/B experiment's readout, as a data scientist
would accept it (intervals, the test named, sample so far against sample needed, a verdict);
`--start PERCENT` / `--stop` begin and end one through the router's admin API."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Any

import typer

from mlsd.console import console, fail


class Product(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def experiment(
    product: Product,
    metric: str | None = typer.Option(
        None,
        "--metric",
        help="recall | precision | flag_rate | error_rate | engagement "
        "[default: the experiment's own, else recall (fraud) / engagement (recsys)].",
    ),
    effect: float = typer.Option(
        0.10, "--effect", help="Relative change to detect (0.10: 10 % of the champion's rate)."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level."),
    power: float = typer.Option(0.80, "--power", help="Power to detect --effect."),
    start: float | None = typer.Option(
        None, "--start", help="Start an experiment: this percent of entities see @challenger."
    ),
    name: str | None = typer.Option(None, "--name", help="The new experiment's name (salt)."),
    stop: bool = typer.Option(False, "--stop", help="End the running experiment."),
) -> None:
    """Each arm's metric with its 95 % interval, the difference with its interval and p-value
    (two-proportion z-test), the sample so far against the sample needed, and a verdict."""
    import httpx

    from mlsd.experiment import DEFAULT_METRIC, METRICS, arm_counts, experiment_rows, running_split
    from mlsd.experiment_stats import readout
    from mlsd.settings import Settings
    from serving.admin import AdminClient, AdminError

    settings = Settings()
    chosen = metric or DEFAULT_METRIC[product.value]
    if chosen not in METRICS:
        console.print(f"[red]error:[/red] --metric: one of {', '.join(METRICS)}, not {chosen!r}")
        raise typer.Exit(2)
    if not 0 < effect < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        console.print("[red]error:[/red] --effect, --alpha and --power must each be in (0, 1)")
        raise typer.Exit(2)
    try:
        with AdminClient.for_lab(settings) as admin:
            if start is not None:
                _start(
                    admin,
                    product.value,
                    start,
                    name or f"ab-{product.value}-{int(time.time())}",
                    chosen,
                )
            if stop:
                answer = admin.call("DELETE", f"/admin/{product.value}/split")
                console.print(f"{product.value}: {answer.get('action', 'split stopped')}")
                return
            status = admin.status(product.value)
    except AdminError as err:
        console.print(f"[red]the router refused:[/red] {err}", highlight=False)
        raise typer.Exit(1) from err
    except httpx.HTTPError as err:  # connection refused: no router
        console.print(
            f"[red]no router on port {settings.router.port}:[/red] {err} "
            "(is the stack up? `mlsd up`)",
            highlight=False,
        )
        raise typer.Exit(1) from err
    split = running_split(status)
    if split is None or split.get("kind") != "experiment":
        fail(
            f"{product.value}: no A/B experiment is running "
            f"(start one: mlsd experiment {product.value} --start 50)"
        )
    if metric is None and split.get("metric") in METRICS:
        chosen = str(split["metric"])
    rows = asyncio.run(experiment_rows(settings, product.value, split, time.time()))
    spec = METRICS[chosen]
    result = readout(
        arm_counts(rows["champion"], chosen),
        arm_counts(rows["challenger"], chosen),
        relative_effect=effect,
        higher_is_better=spec.higher_is_better,
        alpha=alpha,
        power=power,
        prior_baseline=spec.prior,
    )
    print_readout(product.value, split, status, spec.name, spec.meaning, result)


def _start(admin: Any, product: str, percent: float, name: str, metric: str) -> None:
    # The router's split API knows the serving metrics; the readout's own (engagement) is
    # computed here from the same log, so the split is started with a metric it knows.
    body = {
        "experiment": name,
        "metric": metric if metric != "engagement" else "precision",
        "challenger_percent": percent,
    }
    answer = admin.call("PUT", f"/admin/{product}/split", json=body)
    routing = answer.get("routing", {})
    console.print(
        f"{product}: experiment {name} started: {percent:g} % of entities see "
        f"v{routing.get('challenger')}, the rest v{routing.get('champion')}"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _interval(bounds: tuple[float, float] | None) -> str:
    return "n/a" if bounds is None else f"[{bounds[0]:.2%}, {bounds[1]:.2%}]"


def print_readout(
    product: str, split: dict, status: dict, metric: str, meaning: str, result: Any
) -> None:
    from rich.table import Table

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(split["started_at"])))
    console.print(
        f"[bold]{product}: experiment {split['name']}[/bold], {split['challenger_percent']:g} % "
        f"of entities on the challenger since {started} UTC",
        highlight=False,
    )
    console.print(f"metric: {metric} = {meaning}", highlight=False)
    table = Table(title_justify="left")
    for column, justify in (
        ("arm", "left"),
        ("version", "right"),
        ("successes", "right"),
        ("trials", "right"),
        (metric, "right"),
        ("95 % interval (Wilson)", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for arm, counts, bounds in (
        ("champion", result.champion, result.champion_interval),
        ("challenger", result.challenger, result.challenger_interval),
    ):
        table.add_row(
            arm,
            f"v{status.get(arm)}",
            f"{counts.successes:,}",
            f"{counts.trials:,}",
            _pct(counts.rate),
            _interval(bounds),
        )
    console.print(table)
    diff = "n/a" if result.difference is None else f"{result.difference:+.2%}"
    p_value = "n/a" if result.p_value is None else f"{result.p_value:.3g}"
    console.print(
        f"difference (challenger - champion): {diff}, 95 % interval (Wald) "
        f"{_interval(result.difference_interval)}",
        highlight=False,
    )
    console.print(
        f"test: two-sided two-proportion z-test, pooled variance: p = {p_value}", highlight=False
    )
    console.print(
        f"sample: {result.sample_so_far:,} of {result.sample_needed:,} trials per arm needed to "
        f"detect a change of {result.effect:.2%} (absolute) from {result.baseline:.2%} at "
        f"alpha {result.alpha:g}, power {result.power:.0%}",
        highlight=False,
    )
    colour = {"keep running": "yellow", "challenger wins": "green"}.get(result.verdict, "cyan")
    console.print(
        f"verdict: [bold {colour}]{result.verdict}[/bold {colour}] ({result.why})", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.command("experiment")(experiment)
