"""The one rich console every command prints through, and the shapes a person reads in it: a
table that fits 80 columns, a timeline with human times, sizes and durations, and one clear line
(with a documented exit code) for an expected failure. Every command uses these, so the CLI
looks and fails alike everywhere; `--json` output goes through `print_json`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

console = Console()


class ExitCode(IntEnum):
    """What an `mlsd` command's exit status means (listed in `mlsd --help`)."""

    OK = 0
    FAILED = 1  # the command ran and its operation failed or was refused
    NOT_READY = 2  # bad usage, or the lab is not ready for it (stack down, nothing to act on)
    MODEL_REFUSED = 3  # the registration gate refused the trained model
    ROLLED_BACK = 4  # the canary did not pass and was rolled back


EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the operation failed or was refused; 2 bad usage, or the lab is not "
    "ready for it (stack down, nothing to act on); 3 the gate refused the model; 4 the canary "
    "was rolled back."
)


def fail(message: str, code: ExitCode = ExitCode.NOT_READY) -> NoReturn:
    """One line saying what went wrong and what to do, then exit with `code` (no traceback:
    this is for failures a user can expect, not bugs)."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(int(code))


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, never wrapped or coloured."""
    typer.echo(json.dumps(data, indent=2, default=str))


def cell(value: object) -> str:
    """A table cell: None is '-', everything else its str."""
    return "-" if value is None or value == "" else str(value)


def table(
    title: str | None,
    columns: Sequence[str | Column],
    rows: Iterable[Sequence[object]],
) -> Table:
    """A compact table (no inner lines, so it fits 80 columns): a str column may wrap; pass a
    rich `Column` (e.g. `Column("url", overflow="fold")`, `Column("name", no_wrap=True)`) to say
    otherwise. Cells go through `cell` and are escaped (ids may contain `[`); a rich `Text`
    cell (e.g. coloured) is kept as it is."""
    out = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for row in rows:
        out.add_row(*(v if isinstance(v, Text) else escape(cell(v)) for v in row))
    return out


def as_datetime(value: float | str | dt.datetime) -> dt.datetime:
    """Epoch seconds, an ISO 8601 string or a datetime, as an aware UTC datetime."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        moment = dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def human_time(value: float | str | dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'19:58:45 (3m ago)' today, '12-01 19:58 (2d ago)' before; UTC. None -> '-'."""
    if value is None:
        return "-"
    moment = as_datetime(value)
    now = now or dt.datetime.now(dt.UTC)
    ago = (now - moment).total_seconds()
    age = f"in {human_duration(-ago)}" if ago < 0 else f"{human_duration(ago)} ago"
    if moment.date() == now.date():
        return f"{moment:%H:%M:%S} ({age})"
    return f"{moment:%m-%d %H:%M} ({age})"


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


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def timeline(
    title: str | None,
    events: Iterable[tuple[float | str | dt.datetime, str, str]],
    now: dt.datetime | None = None,
) -> Table:
    """Events as a table, oldest first: when (human), what, detail."""
    ordered = sorted(events, key=lambda e: as_datetime(e[0]))
    return table(
        title,
        [Column("when", no_wrap=True), Column("what", no_wrap=True), "detail"],
        [(human_time(at, now), what, detail) for at, what, detail in ordered],
    )
