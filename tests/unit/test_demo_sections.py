"""Where the demo's time goes: its sections' lengths (mlsd.commands.demo)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mlsd.commands.demo import Sections, section_seconds


def test_each_section_lasts_until_the_next_one_begins_and_the_last_until_the_end():
    marks = [("land", 100.0), ("train", 130.0), ("acts", 190.5)]
    assert section_seconds(marks, end=400.0) == [
        ("land", 30.0),
        ("train", 60.5),
        ("acts", 209.5),
    ]
    assert section_seconds([], end=5.0) == []


def test_the_table_tells_every_section_and_the_whole(monkeypatch: pytest.MonkeyPatch):
    from rich.console import Console

    now = iter([0.0, 10.0, 70.0, 100.0])
    monkeypatch.setattr("mlsd.commands.demo.time.monotonic", lambda: next(now))
    sections = Sections()  # began at 0
    monkeypatch.setattr("mlsd.commands.demo.console", Console(file=io.StringIO()))
    sections.rule("1. land")  # at 10
    sections.rule("2. train")  # at 70
    out = Console(width=100, record=True)
    out.print(sections.table())  # ends at 100
    text = out.export_text()
    assert "1. land" in text and "2. train" in text
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in text.splitlines()
        if line.count("│") == 3
    }
    assert rows["1. land"] == "60" and rows["2. train"] == "30" and rows["the whole demo"] == "100"


def test_make_demo_plays_the_acts_unless_told_not_to():
    """`make demo` runs `mlsd demo` bare: the loop's three acts are part of it by default."""
    import typer.main

    from mlsd.cli import app

    demo = typer.main.get_command(app).commands["demo"]  # type: ignore[attr-defined]
    acts = next(p for p in demo.params if p.name == "acts")
    assert acts.default is True and "--no-acts" in acts.secondary_opts
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    assert "\t$(BIN)/mlsd demo\n" in makefile
