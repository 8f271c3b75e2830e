"""`mlsd rehearse` through its real terminal interface: a pseudo-terminal, scripted keystrokes,
the notes saved per section and read back beside the reference answer."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlsd.rehearse import SECTIONS, read_notes, reference_for, time_boxes
from mlsd.walk.document import parse_walkthrough

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

DOC = """# 01. Scammed savings

Seed: `004_adcab8b5b12c9f0e.txt:52`

## Prompt

Our bank's customers are losing their savings to scams.

## Clarifying questions and assumptions

Ask what a blocked payment costs.

## Design

### Problem framing
Score each payment.
### Metrics offline and online
PR-AUC offline; losses prevented online.
### Data
Transactions, chargebacks weeks late.
### Features
Velocity per card.
### Model
Boosted trees, calibrated.
### Training and evaluation
Split by time; p99 was {{fraud_p99}} ms.
### Serving
Router in front of KServe.
### Rollout
Shadow, then canary.
### Monitoring and retraining
Drift on amount.

## What your stack measured

| what | value |
| --- | --- |
| fraud p99 (ms) | {{fraud_p99}} |
"""


class Terminal:
    """A process on a pseudo-terminal, driven like a person at a keyboard."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {text!r} on the terminal; it showed:\n{self.seen[-3000:]}"
                )
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}:\n{self.seen[-3000:]}")
                # Stripped as a whole: a colour code may be cut between two reads.
                self.seen = ANSI.sub("", self.seen + chunk.decode(errors="replace"))
        self.seen = self.seen[self.seen.index(text) + len(text) :]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def drain(self, timeout: float = 30.0) -> str:
        rest, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk.decode(errors="replace")
        return ANSI.sub("", self.seen + rest)


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "walks"
    folder.mkdir()
    (folder / "01-scam.md").write_text(DOC)
    (tmp_path / "data" / "walk").mkdir(parents=True)
    (tmp_path / "data" / "walk" / "01.json").write_text(
        '{"values": {"fraud_p99": {"value": "6.93", "at": 0}}}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSD_")}
    env.update(MLSD_DATA_DIR=str(tmp_path / "data"), COLUMNS="160", TERM="xterm")
    return folder, env


def test_rehearsal_over_a_terminal_saves_notes_and_shows_them_beside_the_reference(lab):
    folder, env = lab
    minutes = 0.08  # 4.8 s for the eight sections: the first box (0.5 s) is overrun on purpose
    term = Terminal(
        [
            sys.executable,
            "-m",
            "mlsd.cli",
            "rehearse",
            "1",
            "--minutes",
            str(minutes),
            "--folder",
            str(folder),
        ],
        env,
    )
    try:
        term.expect("losing their savings to scams")
        term.expect("1/8 Clarify")
        term.expect("> ")
        term.type("what does a blocked card cost the bank?")
        term.expect("> ")
        time.sleep(time_boxes(minutes)[0][1] + 0.3)
        term.type("assume 1,000 payments a second")
        term.expect("time: the box was")
        term.expect("> ")
        term.type("")
        term.expect("saved 2 line(s)")
        for index, (section, _) in enumerate(time_boxes(minutes)[1:], start=2):
            term.expect(f"{index}/8")
            term.expect("> ")
            if section.key == "metrics":
                term.type("recall at 0.5% of customers blocked")
                term.expect("> ")
            term.type("")
        term.expect("review")
        shown = term.drain()
        assert term.proc.wait(timeout=30) == 0, shown
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
    assert "what does a blocked card cost the bank?" in shown  # read back from the file
    assert "Ask what a blocked payment costs." in shown  # the reference beside it
    assert "PR-AUC offline" in shown
    assert "6.93" in shown  # the live figure, filled from the results file
    assert "{{fraud_p99}}" not in shown
    [saved] = list((folder.parent / "data" / "rehearse").glob("01-*.md"))
    notes = read_notes(saved)
    assert list(notes) == [s.key for s in SECTIONS]
    assert (
        notes["clarify"]
        == "what does a blocked card cost the bank?\nassume 1,000 payments a second"
    )
    assert notes["metrics"] == "recall at 0.5% of customers blocked"
    assert notes["data"] == ""


def test_review_of_a_saved_file(lab):
    folder, env = lab
    notes = folder.parent / "notes.md"
    notes.write_text("# x\n\n## model: Model (box 6.0 min, used 1.0 min)\n\ngradient boosting\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlsd.cli",
            "rehearse",
            "1",
            "--review",
            str(notes),
            "--folder",
            str(folder),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "gradient boosting" in done.stdout and "Boosted trees, calibrated." in done.stdout


def test_time_boxes_and_references():
    boxes = time_boxes(45)
    assert sum(b for _, b in boxes) == pytest.approx(45 * 60)
    assert [s.key for s, _ in boxes][:2] == ["clarify", "metrics"]
    assert sum(b for _, b in time_boxes(30)) == pytest.approx(30 * 60)
    with pytest.raises(ValueError):
        time_boxes(0)


def test_every_section_finds_its_reference(tmp_path: Path):
    path = tmp_path / "01-scam.md"
    path.write_text(DOC)
    doc = parse_walkthrough(path)
    for section in SECTIONS:
        assert reference_for(doc, section), section.key
    serving = next(s for s in SECTIONS if s.key == "serving")
    assert "Shadow, then canary." in reference_for(doc, serving)
