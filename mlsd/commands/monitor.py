"""`mlsd monitor fraud|recsys`: judge the latest window now, as the scheduled deployment does,
and show the verdict, the figures beside their reference and what the trigger decided;
`mlsd ui evidently`: Evidently's own UI over the monitoring workspace."""

from __future__ import annotations

import contextlib
import os
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from mlsd.console import console

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mlsd.settings import Settings
    from mlsd.stack import ComponentStatus


class Product(StrEnum):
    fraud = "fraud"
    recsys = "recsys"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "[dim]—[/dim]"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def verdict_table(result: dict[str, Any]) -> Table:
    """The window's figures for people: each beside its reference or its estimate."""
    v = result["verdict"]
    table = Table(
        title=f"window {v['window_id']} (champion v{v['model_version'] or '?'})",
        title_justify="left",
    )
    table.add_column("figure")
    table.add_column("window", justify="right")
    table.add_column("beside it", justify="right")
    table.add_row("rows served", _fmt(v["rows"]), "")
    if v["status"] == "not_enough_data":
        table.add_row("status", "[yellow]not enough data[/yellow]", "decides nothing")
        return table
    if v["drifted_share"] is not None:
        drifted = ", ".join(v["drifted_columns"]) or "none"
        table.add_row("inputs drifted (share)", _fmt(v["drifted_share"], 2), drifted)
        table.add_row("score PSI", _fmt(v["score_psi"]), "")
    quality = (
        "[red]alert[/red]: " + "; ".join(v["failed_expectations"])
        if v["quality_alert"]
        else "[green]ok[/green]"
    )
    table.add_row("data quality (GX)", quality, "")
    if v["product"] == "fraud":
        table.add_row(
            "labelled rows (frauds)", f"{v['labelled_rows']} ({v['labelled_positives']})", ""
        )
        table.add_row(
            "PR-AUC, labelled", _fmt(v["pr_auc"]), f"validation {_fmt(v['reference_pr_auc'])}"
        )
        table.add_row(
            "precision at threshold",
            _fmt(v["precision"]),
            f"estimated {_fmt(v['estimated_precision'])}",
        )
        table.add_row("recall at threshold", _fmt(v["recall"]), "")
        table.add_row(
            "alert rate",
            _fmt(v["alert_rate"], 4),
            f"estimated {_fmt(v['estimated_alert_rate'], 4)}",
        )
    for arm, ctr in sorted(v["click_through"].items()):
        table.add_row(f"click-through, {arm}", _fmt(ctr), "per item shown")
    return table


def monitor(
    product: Product = typer.Argument(..., help="Which product's prediction log to judge."),
    window: float = typer.Option(
        None, "--window", min=1, help="Seconds of log to judge (default monitoring.window_seconds)."
    ),
) -> None:
    """Judge the latest window of a product's prediction log (drift, quality, performance)."""
    code = judge_and_show(product.value, window)
    if code:
        raise typer.Exit(code)


def judge_and_show(product: str, window: float | None = None, until: float | None = None) -> int:
    """Run the `monitor` flow on the `window` seconds of the log before `until` (default: the
    latest window) and show its verdict, the trigger's decision and where the report is; the
    exit code: 0 judged (or not enough data), 1 no reference, 2 no MLflow."""
    from mlsd.netutil import http_ok
    from mlsd.settings import Settings

    settings = Settings()
    if product == "fraud" and not http_ok(f"{settings.mlflow_tracking_uri}/health"):
        console.print(
            f"[red]error:[/red] no MLflow at {settings.mlflow_tracking_uri} (the "
            "champion's reference lives there): start the stack with `mlsd up`"
        )
        return 2
    if http_ok(f"{settings.prefect_api_url}/health"):
        for key, value in settings.prefect_client_env.items():
            os.environ.setdefault(key, value)
    # The flow run's own log lines go to Prefect (its UI shows them, linked below), not into
    # the table a person reads here; its warnings still do. Read as Prefect is first imported.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from monitoring.flow import monitor as monitor_flow
    from monitoring.reference import ReferenceMissing

    try:
        with console.status(f"judging the {product} window"):
            result = monitor_flow(product=product, window_seconds=window, until=until)
    except ReferenceMissing as err:
        console.print(f"[red]no reference:[/red] {err}")
        return 1
    console.print(verdict_table(result))
    decision = result["decision"]
    colour = {"retrain": "bold cyan", "suppress": "yellow", "none": "dim"}[decision["action"]]
    console.print(f"trigger: [{colour}]{decision['action']}[/{colour}] — {decision['reason']}")
    if result["report"]:
        console.print(f"report: {result['report']}")
    console.print(f"summary: {result['summary']}")
    if result.get("flow_run_url"):
        console.print(f"flow run (Prefect): {result['flow_run_url']}")
    console.print(
        f"Evidently UI: `mlsd ui evidently` (http://{settings.client_host}:"
        f"{settings.monitoring.evidently_port}); events: `mlsd watch`"
    )
    return 0


def describe_verdict(v: dict[str, Any]) -> str:
    """What a window showed, in a line: its rows and the figures its product is judged on."""
    if v["status"] == "not_enough_data":
        return f"not enough data ({v['rows']} rows)"
    if v["quality_alert"]:
        return "quality alert: " + ("; ".join(v["failed_expectations"]) or "an expectation failed")
    if v["product"] == "recsys":
        ctr = ", ".join(f"{arm} {value:.3f}" for arm, value in sorted(v["click_through"].items()))
        return f"{v['rows']} slates; click-through {ctr or '-'}"
    parts = [f"{v['rows']} rows"]
    if v["drifted_share"] is not None:
        parts.append(f"{len(v['drifted_columns'])} inputs drifted ({v['drifted_share']:.2f})")
    if v["score_psi"] is not None:
        parts.append(f"score PSI {v['score_psi']:.3f}")
    if v["pr_auc"] is not None:
        parts.append(f"PR-AUC {v['pr_auc']:.3f} (validation {_fmt(v['reference_pr_auc'])})")
    return "; ".join(parts)


def collect_monitoring(settings: Settings, _rows: list[ComponentStatus]) -> Any:
    """Each product's latest window, what the trigger decided on it and its last retrain
    request, from the files monitoring left (`.mlsd/monitoring/`); None before any window."""
    from monitoring.history import product_dir, read_summaries
    from monitoring.retrain import last_request

    products = {}
    for product in ("fraud", "recsys"):
        summaries = read_summaries(settings.monitoring_dir, product)
        if not summaries:
            continue
        judged = [s for s in summaries if s["verdict"]["status"] == "judged"]
        products[product] = {
            "latest": summaries[-1]["verdict"],
            "decision": summaries[-1].get("trigger"),
            "latest_judged": judged[-1]["verdict"] if judged else None,
            "last_request": last_request(product_dir(settings.monitoring_dir, product)),
        }
    if not products:
        return None
    return {
        "products": products,
        "evidently_ui": f"http://{settings.client_host}:{settings.monitoring.evidently_port}",
        "reports": str(settings.monitoring_dir),
    }


def render_monitoring(data: dict[str, Any]) -> RenderableType:
    from rich.console import Group
    from rich.table import Column

    from mlsd.console import human_time, table

    rows = []
    notes = []
    for product, p in data["products"].items():
        latest, decision = p["latest"], p["decision"] or {}
        shown = [(latest, decision, "")]
        if latest["status"] != "judged" and p["latest_judged"]:
            shown.append((p["latest_judged"], {}, "last judged: "))
        for v, d, prefix in shown:
            # A window too small says so in its own cell: the trigger's "not enough data" again
            # would only repeat it.
            reason = d.get("reason", "")
            trigger = d.get("action", "")
            if trigger and reason and not reason.startswith("not enough data"):
                trigger = f"{trigger}: {reason}"
            version = f" v{v['model_version']}" if v["model_version"] else ""
            rows.append(
                (product, human_time(v["end"]) + version, prefix + describe_verdict(v), trigger)
            )
        request = p["last_request"]
        if request:
            notes.append(
                f"{product}: last retrain asked {human_time(request['last_requested_at'])}: "
                f"{request.get('reason', '')}"
            )
    notes.append(
        f"Evidently UI: `mlsd ui evidently` ({data['evidently_ui']}); reports: {data['reports']}"
    )
    out = table(
        "monitoring (windows of the prediction log)",
        ["product", Column("window end", no_wrap=True), "what it showed", "trigger"],
        rows,
    )
    return Group(out, *notes)


ui_app = typer.Typer(help="The tools' own UIs over the lab's state.", no_args_is_help=True)


@ui_app.command("evidently")
def evidently_ui() -> None:
    """Evidently's UI over the monitoring workspace (every window's snapshot, per product)."""
    import subprocess
    import sys
    from pathlib import Path

    from mlsd.settings import Settings
    from monitoring.outputs import workspace_dir

    settings = Settings()
    workspace = workspace_dir(settings.monitoring_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    url = f"http://{settings.client_host}:{settings.monitoring.evidently_port}"
    console.print(f"Evidently UI on {url} (workspace {workspace}); Ctrl-C stops it")
    exe = Path(sys.executable).with_name("evidently")
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(
            [
                str(exe),
                "ui",
                "--workspace",
                str(workspace),
                "--host",
                settings.bind_host,
                "--port",
                str(settings.monitoring.evidently_port),
            ],
            check=False,
        )


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    app.add_typer(ui_app, name="ui")
