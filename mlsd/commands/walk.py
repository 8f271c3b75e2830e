"""`mlsd walk NN [--auto] | --all --auto | NN --show`: a walkthrough's steps against the live
stack, each checked against its stated expectation; the figures it records are kept."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mlsd.console import console


def walk(
    number: str | None = typer.Argument(None, help="The walkthrough: 1..12 (see walkthroughs/)."),
    auto: bool = typer.Option(False, "--auto", help="Run every step without stopping."),
    all_: bool = typer.Option(False, "--all", help="Every walkthrough, in order."),
    show: bool = typer.Option(
        False, "--show", help="Only show what the last run measured (no step runs)."
    ),
    folder: Path | None = typer.Option(
        None, "--folder", help="Where the walkthroughs are [default: walkthroughs/]."
    ),
) -> None:
    """Run a walkthrough's steps against the live stack (Enter to go on; --auto: no stops)."""
    from mlsd.settings import Settings
    from mlsd.walk.document import (
        WalkthroughError,
        find_walkthrough,
        parse_walkthrough,
        walkthrough_paths,
    )
    from mlsd.walk.runner import WALKTHROUGHS

    where = folder or WALKTHROUGHS
    if all_ == (number is not None):
        console.print("[red]error:[/red] give a walkthrough number, or --all (not both)")
        raise typer.Exit(2)
    if all_ and not auto and not show:
        console.print("[red]error:[/red] --all runs without stopping: add --auto")
        raise typer.Exit(2)
    try:
        paths = walkthrough_paths(where) if all_ else [find_walkthrough(where, str(number))]
        docs = [parse_walkthrough(p) for p in paths]
    except WalkthroughError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    data_dir = Settings().data_dir
    if show:
        for doc in docs:
            show_measured(doc, data_dir)
        return
    failed: list[str] = []
    summary: list[tuple[str, int, int, float, str]] = []
    for doc in docs:
        passed, seconds, failure = play(doc, data_dir, interactive=not auto)
        summary.append((doc.number, passed, len(doc.steps), seconds, failure or ""))
        if failure:
            failed.append(failure)
    if len(docs) > 1:
        print_summary(summary)
    if failed:
        console.rule("[red]failed[/red]")
        for report in failed:
            console.print(report, markup=False, highlight=False)
        raise typer.Exit(1)


def play(doc: object, data_dir: Path, interactive: bool) -> tuple[int, float, str | None]:
    """Run one walkthrough's steps in order; stop at the first that fails (later steps build
    on it). Returns (steps passed, seconds, the failure's report or None)."""
    from mlsd.walk.document import Walkthrough
    from mlsd.walk.runner import failure_report, run_step, save_results

    assert isinstance(doc, Walkthrough)
    console.rule(f"walkthrough {doc.number}: {doc.title}")
    started = time.monotonic()
    passed = 0
    for step in doc.steps:
        console.print(
            f"[bold]step {step.index}/{len(doc.steps)}[/bold] {step.title}\n  [cyan]$ {step.run}[/cyan]",
            highlight=False,
        )
        if interactive:
            typer.prompt(
                "  Enter to run (Ctrl-C to stop)", default="", show_default=False, prompt_suffix=""
            )
        with console.status(f"running: {step.run}"):
            result = run_step(step)
        if interactive or not result.ok:
            console.print(_indent(result.output), markup=False, highlight=False)
        if result.recorded:
            save_results(data_dir, doc.number, result.recorded, time.time())
        if not result.ok:
            console.print(f"  [red]✗ failed[/red] after {result.seconds:.1f} s")
            return passed, time.monotonic() - started, failure_report(doc, result)
        figures = ", ".join(f"{k} = {v}" for k, v in result.recorded.items())
        console.print(
            f"  [green]✓[/green] {len(step.expect) + len(step.expect_not) + 1} check(s) met "
            f"in {result.seconds:.1f} s" + (f"; recorded {figures}" if figures else ""),
            highlight=False,
        )
        passed += 1
    show_measured(doc, data_dir)
    return passed, time.monotonic() - started, None


def show_measured(doc: object, data_dir: Path) -> None:
    """The walkthrough's 'What your stack measured' section, filled from the results file."""
    from rich.markdown import Markdown

    from mlsd.walk.document import Walkthrough
    from mlsd.walk.runner import fill_figures, load_results, results_path

    assert isinstance(doc, Walkthrough)
    results = load_results(data_dir, doc.number)
    text = doc.sections.get("What your stack measured", "")
    console.rule(f"what your stack measured: walkthrough {doc.number}")
    console.print(Markdown(fill_figures(text, results.get("values", {}))))
    if results:
        console.print(f"(from {results_path(data_dir, doc.number)})", highlight=False)


def print_summary(rows: list[tuple[str, int, int, float, str]]) -> None:
    from rich.table import Table

    table = Table(title="walkthroughs")
    for column in ("walkthrough", "steps met", "seconds", "result"):
        table.add_column(column)
    for number, passed, total, seconds, failure in rows:
        result = "[green]ok[/green]" if not failure else "[red]failed[/red]"
        table.add_row(number, f"{passed}/{total}", f"{seconds:.0f}", result)
    console.print(table)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines()) or f"{prefix}(no output)"


def register(app: typer.Typer) -> None:
    app.command("walk")(walk)
