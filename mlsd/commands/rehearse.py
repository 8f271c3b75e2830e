"""`mlsd rehearse NN`: the prompt, a time box per section of the answer, your notes saved per
section, then the reference answer beside your notes and your own stack's live numbers."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mlsd.console import console


def rehearse(
    number: str = typer.Argument(..., help="The walkthrough to rehearse: 1..12."),
    minutes: float = typer.Option(45.0, "--minutes", help="The whole answer's time, in minutes."),
    folder: Path | None = typer.Option(
        None, "--folder", help="Where the walkthroughs are [default: walkthroughs/]."
    ),
    review: Path | None = typer.Option(
        None, "--review", help="Only show a saved notes file beside the reference answer."
    ),
) -> None:
    """Answer the walkthrough's prompt section by section against the clock (an empty line ends
    a section); your notes are saved, then compared with the reference answer."""
    from mlsd.rehearse import format_section, notes_path, time_boxes
    from mlsd.settings import Settings
    from mlsd.walk.document import WalkthroughError, find_walkthrough, parse_walkthrough
    from mlsd.walk.runner import WALKTHROUGHS

    try:
        doc = parse_walkthrough(find_walkthrough(folder or WALKTHROUGHS, number))
        boxes = time_boxes(minutes)
    except (WalkthroughError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    data_dir = Settings().data_dir
    if review is not None:
        show_review(doc, review, data_dir)
        return
    path = notes_path(data_dir, doc.number, time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Rehearsal of walkthrough {doc.number}: {doc.title}\n\n")
    console.rule(f"rehearsal: {doc.title}")
    console.print(doc.prompt, markup=False, highlight=False)
    console.print(
        f"\n{minutes:g} minutes in {len(boxes)} sections; type your answer's notes, "
        "an empty line ends a section. Notes are saved to:",
        highlight=False,
    )
    console.print(str(path), markup=False, highlight=False)
    for index, (section, box) in enumerate(boxes, start=1):
        console.rule(f"{index}/{len(boxes)} {section.title}: {box / 60:.1f} min")
        started = time.monotonic()
        lines: list[str] = []
        warned = False
        while True:
            try:
                line = input("> ")
            except EOFError:
                line = ""
            if not line.strip():
                break
            lines.append(line)
            used = time.monotonic() - started
            if used > box and not warned:
                console.print(
                    f"[yellow]time: the box was {box / 60:.1f} min; finish the thought, "
                    "then an empty line[/yellow]"
                )
                warned = True
        used = time.monotonic() - started
        with path.open("a") as notes:  # per section: Ctrl-C keeps what was written
            notes.write(format_section(section, box, used, lines))
        over = "  [yellow](over the box)[/yellow]" if used > box else ""
        console.print(f"saved {len(lines)} line(s), {used / 60:.1f} min{over}")
    show_review(doc, path, data_dir)


def show_review(doc: object, notes_file: Path, data_dir: Path) -> None:
    """Section by section: your notes (read back from the file) beside the worked answer, the
    figures in it filled from your stack's last run; then the measured section."""
    from rich.markdown import Markdown
    from rich.table import Table

    from mlsd.rehearse import SECTIONS, read_notes, reference_for
    from mlsd.walk.document import Walkthrough
    from mlsd.walk.runner import fill_figures, load_results

    assert isinstance(doc, Walkthrough)
    if not notes_file.is_file():
        console.print(f"[red]error:[/red] no notes file {notes_file}")
        raise typer.Exit(2)
    notes = read_notes(notes_file)
    values = load_results(data_dir, doc.number).get("values", {})
    console.rule(f"review: your notes beside the reference answer ({notes_file.name})")
    for section in SECTIONS:
        table = Table(title=section.title, title_justify="left", show_lines=True, expand=True)
        table.add_column("your notes", ratio=1)
        table.add_column("reference answer (walkthrough " + doc.number + ")", ratio=2)
        reference = fill_figures(reference_for(doc, section), values)
        table.add_row(notes.get(section.key) or "(nothing written)", Markdown(reference))
        console.print(table)
    console.rule("your stack's numbers (from `mlsd walk " + doc.number + "`)")
    measured = doc.sections.get("What your stack measured", "")
    console.print(Markdown(fill_figures(measured, values)))


def register(app: typer.Typer) -> None:
    app.command("rehearse")(rehearse)
