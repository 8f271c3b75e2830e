"""`mlsd config ...`: show the effective settings."""

from __future__ import annotations

import json

import typer

from mlsd.console import console

app = typer.Typer(help="Inspect the lab's settings.", no_args_is_help=True)


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


@app.command("show")
def show(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings (defaults, mlsd.toml, then MLSD_* environment)."""
    from mlsd.settings import Settings

    settings = Settings()
    values = json.loads(settings.model_dump_json())
    if as_json:
        console.print_json(data=values)
        return
    from rich.table import Table

    table = Table(title=f"mlsd settings (profile: {settings.profile})")
    table.add_column("setting / environment variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for dotted, description in _describe(Settings):
        value: object = values
        for part in dotted.split("."):
            value = value[part]  # type: ignore[index]
        env = "MLSD_" + dotted.replace(".", "__").upper()
        table.add_row(f"{dotted}\n[dim]{env}[/dim]", str(value), description)
    console.print(table)
