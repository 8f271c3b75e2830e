"""What a walkthrough is: its sections, its runnable steps and its measured placeholders, read
from the markdown itself so that the document and the script cannot drift apart.

A step is a fenced block of kind ``mlsd-step``::

    ```mlsd-step
    title: the router answers a transaction
    run: mlsd status
    expect: router\\s+healthy          (a regex the output must match; repeatable)
    expect-not: Traceback             (a regex it must not match; repeatable)
    exit: 0                           (the exit code; default 0)
    record: fraud_p99_ms = p99 ([\\d.]+)  (a figure captured from the output; repeatable)
    timeout: 60                       (seconds; default 300)
    ```

A figure is shown where the text says ``{{name}}`` (a value a step recorded) or
``{{bench:FILE:FIGURE}}`` (a figure `make bench` recorded in benchmarks/results/FILE.json).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

STEP_FENCE = "mlsd-step"
# The shape every walkthrough has (issue 13), as its level-2 headings, in this order.
SECTIONS = (
    "Prompt",
    "Clarifying questions and assumptions",
    "Requirements and back-of-envelope",
    "Design",
    "Run it",
    "What your stack measured",
    "Failure drill",
    "Trade-offs and follow-up questions",
    "At 100x scale",
)
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_FENCE = re.compile(r"^```(\S*)\s*$")
_KEYS = {"title", "run", "expect", "expect-not", "exit", "record", "timeout"}
DEFAULT_TIMEOUT_S = 300.0  # a step on a busy 2-core machine (CI) can take minutes


class WalkthroughError(ValueError):
    """A walkthrough that cannot be read: the file and line say where."""


@dataclass(frozen=True)
class Capture:
    """A figure taken from a step's output: the regex's first group, under `name`."""

    name: str
    pattern: str


@dataclass(frozen=True)
class Step:
    """One runnable step of a walkthrough, with what its output must show."""

    index: int  # 1-based, in document order
    line: int  # the line of its opening fence
    title: str
    run: str
    expect: tuple[str, ...] = ()
    expect_not: tuple[str, ...] = ()
    exit_code: int = 0
    captures: tuple[Capture, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Walkthrough:
    number: str  # "01"
    path: Path
    title: str
    sections: dict[str, str]  # level-2 heading -> its text
    steps: tuple[Step, ...]
    minutes: int | None = None
    seed: str | None = None  # "004_adcab8b5b12c9f0e.txt:52"
    components: tuple[str, ...] = field(default_factory=tuple)

    @property
    def prompt(self) -> str:
        return self.sections.get("Prompt", "").strip()

    def placeholders(self) -> list[str]:
        """Every figure the text shows from a live run, in order of first appearance."""
        seen: dict[str, None] = {}
        for text in self.sections.values():
            for match in PLACEHOLDER.finditer(text):
                seen.setdefault(match.group(1), None)
        return list(seen)

    def recorded_names(self) -> set[str]:
        return {c.name for s in self.steps for c in s.captures}


def parse_step(block: list[str], index: int, line: int, where: str) -> Step:
    """A step from the lines of its fenced block (without the fences)."""
    values: dict[str, list[str]] = {}
    for offset, raw in enumerate(block, start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        key, sep, value = raw.partition(":")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise WalkthroughError(
                f"{where}:{line + offset}: a step line is 'key: value' with key one of "
                f"{sorted(_KEYS)}, not {raw.strip()!r}"
            )
        values.setdefault(key, []).append(value.strip())
    for needed in ("title", "run"):
        if len(values.get(needed, [])) != 1:
            raise WalkthroughError(f"{where}:{line}: a step needs exactly one '{needed}:'")
    captures = []
    for spec in values.get("record", []):
        name, eq, pattern = spec.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_]*", name.strip()):
            raise WalkthroughError(f"{where}:{line}: record is 'name = regex', not {spec!r}")
        if re.compile(pattern.strip()).groups < 1:
            raise WalkthroughError(f"{where}:{line}: record {name.strip()} needs a (group)")
        captures.append(Capture(name.strip(), pattern.strip()))
    for pattern in values.get("expect", []) + values.get("expect-not", []):
        try:
            re.compile(pattern)
        except re.error as err:
            raise WalkthroughError(f"{where}:{line}: bad regex {pattern!r}: {err}") from err
    return Step(
        index=index,
        line=line,
        title=values["title"][0],
        run=values["run"][0],
        expect=tuple(values.get("expect", [])),
        expect_not=tuple(values.get("expect-not", [])),
        exit_code=int(values.get("exit", ["0"])[0]),
        captures=tuple(captures),
        timeout_s=float(values.get("timeout", [str(DEFAULT_TIMEOUT_S)])[0]),
    )


def parse_walkthrough(path: Path) -> Walkthrough:
    """Read a walkthrough: its title (the level-1 heading), front matter lines
    (``Seed:``, ``Minutes:``, ``Components:`` before the first section), sections and steps."""
    lines = path.read_text().splitlines()
    where = str(path)
    title = ""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    steps: list[Step] = []
    meta: dict[str, str] = {}
    fence: str | None = None
    block: list[str] = []
    block_line = 0
    for number, raw in enumerate(lines, start=1):
        if fence is not None:  # inside a fenced block
            if raw.strip() == "```":
                if fence == STEP_FENCE:
                    steps.append(parse_step(block, len(steps) + 1, block_line, where))
                fence = None
            else:
                block.append(raw)
        elif opened := _FENCE.match(raw):
            fence, block, block_line = opened.group(1), [], number
        elif raw.startswith("# ") and not title:
            title = raw[2:].strip()
            continue
        elif raw.startswith("## "):
            current = raw[3:].strip()
            if current in sections:
                raise WalkthroughError(f"{where}:{number}: section {current!r} appears twice")
            sections[current] = []
            continue
        elif current is None:
            key, sep, value = raw.partition(":")
            if sep and key.strip("*- ").strip() in {"Seed", "Minutes", "Components"}:
                meta[key.strip("*- ").strip()] = value.strip().strip("*").strip()
            continue
        if current is not None:
            sections[current].append(raw)
    if fence is not None:
        raise WalkthroughError(f"{where}:{block_line}: a fenced block is never closed")
    match = re.match(r"(\d\d)-", path.name)
    if not match:
        raise WalkthroughError(f"{where}: a walkthrough's file name starts with its number, NN-")
    minutes = meta.get("Minutes")
    return Walkthrough(
        number=match.group(1),
        path=path,
        title=title,
        sections={k: "\n".join(v) for k, v in sections.items()},
        steps=tuple(steps),
        minutes=int(minutes) if minutes and minutes.isdigit() else None,
        seed=meta.get("Seed", "").strip("`") or None,
        components=tuple(
            c.strip().strip("`") for c in meta.get("Components", "").split(",") if c.strip()
        ),
    )


def walkthrough_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]-*.md"))


def find_walkthrough(folder: Path, number: str) -> Path:
    """The file of walkthrough `number` ("1", "01", or its file name)."""
    wanted = number.zfill(2) if number.isdigit() else number
    for path in walkthrough_paths(folder):
        if path.name.startswith(f"{wanted}-") or path.name == wanted:
            return path
    known = ", ".join(p.name[:2] for p in walkthrough_paths(folder)) or "none"
    raise WalkthroughError(f"no walkthrough {number!r} in {folder} (there are: {known})")
