"""`mlsd config ...`: show the effective settings."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from mlsd.console import EXIT_CODES_HELP, console, fail, print_json

app = typer.Typer(help="Inspect the lab's settings.", epilog=EXIT_CODES_HELP, no_args_is_help=True)


def _describe(model: type, prefix: str = "") -> list[tuple[str, str]]:
    """Dotted field names with their descriptions, walking nested sections."""
    rows: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            rows += _describe(annotation, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", field.description or ""))
    return rows


@app.command("show", epilog=EXIT_CODES_HELP)
def show(
    section: str | None = typer.Argument(
        None, help="Only settings whose name starts with this (e.g. router, router.canary)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print the effective settings (defaults, mlsd.toml, then MLSD_* environment), each with
    its environment variable and what it means."""
    from mlsd.settings import Settings

    settings = Settings()
    values = json.loads(settings.model_dump_json())
    described = [
        (dotted, text)
        for dotted, text in _describe(Settings)
        if section is None or dotted == section or dotted.startswith(f"{section}.")
    ]
    if not described:
        sections = sorted({d.split(".")[0] for d, _ in _describe(Settings) if "." in d})
        fail(f"no setting starts with {section!r}; sections: {', '.join(sections)}")
    if as_json:
        print_json({d: _value(values, d) for d, _ in described} if section else values)
        return
    # A list, not a table: a table's meaning column is too narrow to read at 80 columns.
    console.print(f"[bold]mlsd settings[/bold] (profile: {settings.profile})")
    current = None
    for dotted, description in described:
        group = dotted.rsplit(".", 1)[0] if "." in dotted else "(top level)"
        if group != current:
            console.rule(f"[bold]{group}[/bold]", align="left")
            current = group
        env = "MLSD_" + dotted.replace(".", "__").upper()
        value = json.dumps(_value(values, dotted))
        console.print(f"[cyan]{dotted}[/cyan] = {escape(value)}  [dim]{env}[/dim]", soft_wrap=False)
        if description:
            console.print(Padding(Text(description, style="dim"), (0, 0, 0, 4)))


def _value(values: dict, dotted: str) -> object:
    value: object = values
    for part in dotted.split("."):
        value = value[part]  # type: ignore[index]
    return value
