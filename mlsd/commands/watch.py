"""`mlsd watch`: the loop's timeline live in the terminal, read from Prefect's event feed (the
same events Prefect's UI shows), with the time since the drift was injected."""

from __future__ import annotations

import datetime as dt
import os
import time

import typer

from mlsd.console import console


def watch(
    since: float = typer.Option(
        30.0, "--since", min=0, help="Show events of the last this many minutes."
    ),
    once: bool = typer.Option(False, "--once", help="Print the timeline once and exit."),
    flow_runs: bool = typer.Option(
        True, "--flow-runs/--no-flow-runs", help="Include Prefect's flow-run events."
    ),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes."),
) -> None:
    """The lab's events as a timeline (drift injected, windows judged, retrains, canaries...)."""
    from mlsd.netutil import http_ok
    from mlsd.settings import Settings
    from mlsd.timeline import read_timeline, timeline_table

    settings = Settings()
    api = os.environ.get("PREFECT_API_URL") or settings.prefect_api_url
    if not http_ok(f"{api}/health"):
        console.print(f"[red]error:[/red] no Prefect API at {api}: start the stack with `mlsd up`")
        raise typer.Exit(2)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=since)
    title = f"lab timeline (Prefect UI: {api.removesuffix('/api')}/events)"
    if once:
        console.print(timeline_table(read_timeline(start, api, flow_runs), title=title))
        return
    from rich.live import Live

    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                events = read_timeline(start, api, flow_runs)
                live.update(timeline_table(events[-60:], title=title), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
