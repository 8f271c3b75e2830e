"""Rehearsal: the answer's sections with their time boxes, the notes file (written per section,
read back for the review), and each section's reference answer taken from the walkthrough.

Pure functions and small file I/O; the terminal dialogue is `mlsd.commands.rehearse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlsd.walk.document import Walkthrough


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    weight: int  # minutes of a 45-minute answer
    reference: str  # where the walkthrough holds its worked answer: "## X" or "### X" in Design


# A 45-minute answer: the interview's usual order, with time where candidates run short.
SECTIONS: tuple[Section, ...] = (
    Section(
        "clarify", "Clarify: questions and assumptions", 5, "Clarifying questions and assumptions"
    ),
    Section("metrics", "Metrics, offline and online", 5, "Metrics offline and online"),
    Section("data", "Data", 5, "Data"),
    Section("features", "Features", 5, "Features"),
    Section("model", "Model", 6, "Model"),
    Section("training", "Training and evaluation", 6, "Training and evaluation"),
    Section("serving", "Serving and rollout", 7, "Serving"),
    Section("monitoring", "Monitoring and retraining", 6, "Monitoring and retraining"),
)
# Design subsections (### headings) every walkthrough has, so each section has a reference.
DESIGN_PARTS = (
    "Problem framing",
    "Metrics offline and online",
    "Data",
    "Features",
    "Model",
    "Training and evaluation",
    "Serving",
    "Rollout",
    "Monitoring and retraining",
)


def time_boxes(total_minutes: float) -> list[tuple[Section, float]]:
    """Each section with its box in seconds, the 45-minute split scaled to `total_minutes`."""
    if total_minutes <= 0:
        raise ValueError("--minutes must be positive")
    weights = sum(s.weight for s in SECTIONS)
    return [(s, total_minutes * 60 * s.weight / weights) for s in SECTIONS]


def design_parts(design: str) -> dict[str, str]:
    """The Design section's ### subsections, by heading."""
    parts: dict[str, list[str]] = {}
    current: str | None = None
    for line in design.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    return {k: "\n".join(v).strip() for k, v in parts.items()}


def reference_for(doc: Walkthrough, section: Section) -> str:
    """The walkthrough's worked answer for one rehearsal section."""
    if section.reference in doc.sections:
        return doc.sections[section.reference].strip()
    parts = design_parts(doc.sections.get("Design", ""))
    text = parts.get(section.reference, "")
    if section.key == "serving" and parts.get("Rollout"):
        text += "\n\n**Rollout.** " + parts["Rollout"]
    return text.strip()


def notes_path(data_dir: Path, number: str, stamp: str) -> Path:
    return data_dir / "rehearse" / f"{number}-{stamp}.md"


def format_section(section: Section, box_s: float, used_s: float, lines: list[str]) -> str:
    head = (
        f"## {section.key}: {section.title} (box {box_s / 60:.1f} min, used {used_s / 60:.1f} min)"
    )
    return "\n".join([head, "", *lines, "", ""])


def read_notes(path: Path) -> dict[str, str]:
    """A notes file back: section key -> the notes written under it."""
    notes: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^## (\w+): ", line):
            current = match.group(1)
            notes[current] = []
        elif current is not None:
            notes[current].append(line)
    return {k: "\n".join(v).strip() for k, v in notes.items()}
