"""The walkthroughs keep their shape: every section in order, a reference answer for every
rehearsal section, steps that parse, every file or component they name present in the repo,
every `mlsd` command they quote registered, each prompt traced to a seed line, and no measured
figure typed into the markdown (the measured section holds placeholders a live run fills)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer

from mlsd.cli import app
from mlsd.rehearse import DESIGN_PARTS, SECTIONS, reference_for
from mlsd.walk.document import PLACEHOLDER, parse_walkthrough, walkthrough_paths
from mlsd.walk.document import SECTIONS as SHAPE
from mlsd.walk.runner import BENCH_RESULTS, bench_figure

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "walkthroughs"
PATHS = walkthrough_paths(FOLDER)
SEEDS = Path(os.environ.get("MLSD_SEEDS_DIR", REPO.parent / "shared" / "seeds"))
_SEED_REF = re.compile(r'^(\d{3}_[0-9a-f]{16}\.txt):(\d+) "(.+)"$')
# A repo path in backticks: under one of the repo's folders, or a file at its root.
_PATH = re.compile(
    r"`((?:mlsd|simulator|pipeline|features|models|serving|monitoring|benchmarks|docs|infra|"
    r"tests|walkthroughs|scripts)/[\w./*-]*|Makefile|README\.md|pyproject\.toml)(?::\d+)?`"
)
_COMMAND = re.compile(r"`mlsd ([a-z][a-z-]*)")


def registered_commands() -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


def seed_table() -> dict[tuple[str, int], str]:
    rows = {}
    for line in (FOLDER / "seeds.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            rows[(cells[0], int(cells[1]))] = cells[2]
    return rows


def test_twelve_walkthroughs_numbered_in_order():
    assert [p.name[:2] for p in PATHS] == [f"{n:02d}" for n in range(1, len(PATHS) + 1)]
    assert len(PATHS) >= 12


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_section_in_order_and_every_design_part(path: Path):
    doc = parse_walkthrough(path)
    assert [s for s in doc.sections if s in SHAPE] == list(SHAPE), (
        "sections missing or out of order"
    )
    design = doc.sections["Design"]
    parts = [line[4:].strip() for line in design.splitlines() if line.startswith("### ")]
    assert parts == list(DESIGN_PARTS)
    for section in SECTIONS:
        assert len(reference_for(doc, section)) > 50, f"thin reference for {section.key}"
    assert doc.minutes and doc.components and doc.title


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_runs_and_drills_have_checked_steps(path: Path):
    doc = parse_walkthrough(path)
    text = path.read_text()
    run_at = text.index("\n## Run it")
    drill_at = text.index("\n## Failure drill")
    lines = [text[:i].count("\n") + 1 for i in (run_at, drill_at)]
    in_run = [s for s in doc.steps if lines[0] < s.line < lines[1]]
    in_drill = [s for s in doc.steps if s.line > lines[1]]
    assert len(in_run) >= 2 and in_drill, "a walkthrough runs something and breaks something"
    for step in doc.steps:
        assert step.expect or step.expect_not or step.captures or step.exit_code != 0, (
            f"step {step.index} checks nothing"
        )


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_named_file_and_command_exists(path: Path):
    doc = parse_walkthrough(path)
    text = path.read_text()
    named = set(_PATH.findall(text)) | set(doc.components)
    missing = [n for n in sorted(named) if not list(REPO.glob(n.rstrip("/")))]
    assert missing == [], f"named in {path.name} but not in the repo"
    commands = set(_COMMAND.findall(text)) | {
        s.run.split()[1] for s in doc.steps if s.run.startswith("mlsd ")
    }
    assert commands <= registered_commands(), commands - registered_commands()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_prompt_traces_to_a_seed_line(path: Path):
    doc = parse_walkthrough(path)
    match = _SEED_REF.match(doc.seed or "")
    assert match, f"Seed: is 'FILE:LINE \"quote\"', not {doc.seed!r}"
    name, line, quote = match.group(1), int(match.group(2)), match.group(3)
    assert seed_table().get((name, line)) == quote, "not the line walkthroughs/seeds.md quotes"
    if (SEEDS / name).is_file():  # the originals, where this checkout has them
        original = (SEEDS / name).read_text().splitlines()[line - 1]
        assert quote in original


def test_the_seed_table_quotes_the_originals():
    if not SEEDS.is_dir():
        pytest.skip(f"the seeds are not in this checkout ({SEEDS}); the table is checked above")
    for (name, line), quote in seed_table().items():
        assert quote in (SEEDS / name).read_text().splitlines()[line - 1], (name, line)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_no_measured_figure_is_typed_in(path: Path):
    doc = parse_walkthrough(path)
    measured = doc.sections["What your stack measured"]
    names = [m.group(1) for m in PLACEHOLDER.finditer(measured)]
    assert names, "the measured section shows figures from the live run"
    # Names of figures may hold digits (p99, NDCG@10, top-10); no other digit may appear.
    prose = re.sub(r"\bp\d\d\b|@\d+|top-\d+", "", PLACEHOLDER.sub("", measured))
    typed = re.findall(r"\d", prose)
    assert typed == [], "digits typed into 'What your stack measured': fill them from a step"
    for name in doc.placeholders():
        if name.startswith("bench:"):
            assert bench_figure(name, BENCH_RESULTS) is not None, f"no recorded figure {name}"
        else:
            assert name in doc.recorded_names(), f"{{{{{name}}}}} is recorded by no step"


def test_the_index_lists_every_walkthrough_with_its_seed_and_minutes():
    index = (FOLDER / "README.md").read_text()
    for path in PATHS:
        doc = parse_walkthrough(path)
        row = next((line for line in index.splitlines() if f"({path.name})" in line), None)
        assert row, f"{path.name} is not in walkthroughs/README.md"
        assert (doc.seed or "").split(" ")[0] in row and f"| {doc.minutes} |" in row
