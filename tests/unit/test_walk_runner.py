"""`mlsd walk`: steps read from the markdown, run, checked against their expectation; a failure
names the step, what was expected and what came; recorded figures fill the measured section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlsd.cli import app
from mlsd.walk.document import WalkthroughError, parse_walkthrough
from mlsd.walk.runner import check_output, fill_figures, run_step

DOC = """# 01. A tiny walkthrough

Seed: `004_adcab8b5b12c9f0e.txt:52`
Minutes: 5
Components: `mlsd/walk/`

## Prompt

Say hello.

## Run it

```mlsd-step
title: greet
run: echo "hello, p99 4.2 ms"
expect: hello
record: greeting_p99 = p99 ([\\d.]+) ms
```

```mlsd-step
title: the shell says what it was given
run: printf 'a\\nb\\n'; exit 3
exit: 3
expect: ^b$
expect-not: Traceback
```

## What your stack measured

| what | value |
| --- | --- |
| the greeting's p99 (ms) | {{greeting_p99}} |
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "walks").mkdir()
    (tmp_path / "walks" / "01-tiny.md").write_text(DOC)
    return tmp_path / "walks"


def test_parses_sections_steps_and_front_matter(folder: Path):
    doc = parse_walkthrough(folder / "01-tiny.md")
    assert doc.number == "01" and doc.title == "01. A tiny walkthrough"
    assert doc.seed == "004_adcab8b5b12c9f0e.txt:52" and doc.minutes == 5
    assert list(doc.sections) == ["Prompt", "Run it", "What your stack measured"]
    first, second = doc.steps
    assert (first.title, first.run, first.expect) == (
        "greet",
        'echo "hello, p99 4.2 ms"',
        ("hello",),
    )
    assert first.captures[0].name == "greeting_p99"
    assert (second.exit_code, second.expect_not) == (3, ("Traceback",))
    assert doc.placeholders() == ["greeting_p99"] and doc.recorded_names() == {"greeting_p99"}


def test_a_malformed_step_is_refused_with_its_line(tmp_path: Path):
    path = tmp_path / "02-bad.md"
    path.write_text("# bad\n\n## Run it\n\n```mlsd-step\ntitle: x\nrun: true\nwhatever\n```\n")
    with pytest.raises(WalkthroughError, match=r"02-bad.md:8: a step line is 'key: value'"):
        parse_walkthrough(path)
    path.write_text("# bad\n\n```mlsd-step\ntitle: x\nrecord: n = no group\nrun: true\n```\n")
    with pytest.raises(WalkthroughError, match="needs a \\(group\\)"):
        parse_walkthrough(path)


def test_check_output_names_what_was_expected_and_what_came(folder: Path):
    step = parse_walkthrough(folder / "01-tiny.md").steps[0]
    assert check_output(step, 0, "hello, p99 4.2 ms") == ([], {"greeting_p99": "4.2"})
    problems, _ = check_output(step, 1, "bye")
    assert "expected exit code 0; it exited with 1" in problems
    assert "expected the output to match /hello/; it did not" in problems
    assert any("expected to record greeting_p99" in p for p in problems)
    problems, _ = check_output(step, None, "hello p99 1 ms")
    assert problems == ["expected it to finish within 300 s; it was still running"]


def test_run_step_runs_the_shell_command(folder: Path):
    steps = parse_walkthrough(folder / "01-tiny.md").steps
    assert run_step(steps[0]).recorded == {"greeting_p99": "4.2"}
    second = run_step(steps[1])
    assert second.ok and second.exit_code == 3


def test_walk_auto_records_figures_and_shows_them(folder: Path, tmp_path: Path):
    done = CliRunner().invoke(app, ["walk", "1", "--auto", "--folder", str(folder)])
    assert done.exit_code == 0, done.output
    saved = json.loads((tmp_path / "data" / "walk" / "01.json").read_text())
    assert saved["values"]["greeting_p99"]["value"] == "4.2"
    assert "4.2" in done.output  # the measured section, filled from the run
    shown = CliRunner().invoke(app, ["walk", "1", "--show", "--folder", str(folder)])
    assert "4.2" in shown.output


def test_a_failed_expectation_says_which_step_what_was_expected_and_what_came(folder: Path):
    (folder / "02-broken.md").write_text(
        "# 02. broken\n\n## Run it\n\n```mlsd-step\ntitle: count\nrun: echo 41\n"
        "expect: ^42$\n```\n\n```mlsd-step\ntitle: never reached\nrun: echo no\n```\n"
    )
    done = CliRunner().invoke(app, ["walk", "--all", "--auto", "--folder", str(folder)])
    assert done.exit_code == 1
    assert "walkthrough 02, step 1 (02-broken.md:5): count" in done.output
    assert "expected the output to match /^42$/; it did not" in done.output
    assert "    41" in done.output  # what came
    assert "never reached" not in done.output.split("failed")[-1]
    summary = done.output.split("walkthroughs")[-1]
    assert "2/2" in summary and "0/2" in summary  # 01 met both of its steps, 02 none


def test_interactive_mode_waits_for_enter(folder: Path):
    done = CliRunner().invoke(app, ["walk", "1", "--folder", str(folder)], input="\n\n")
    assert done.exit_code == 0, done.output
    assert done.output.count("Enter to run") == 2


def test_fill_figures_never_invents_a_value(tmp_path: Path):
    text = "p99 {{greeting_p99}}; bench {{bench:router:fraud p99}}; {{missing}}"
    filled = fill_figures(text, {"greeting_p99": {"value": "4.2"}}, tmp_path)
    assert filled == (
        "p99 4.2; bench (not recorded yet: `make bench`); (not measured yet: run the steps)"
    )
    (tmp_path / "router.json").write_text(
        json.dumps({"figures": [{"name": "fraud p99", "value": 6.9281, "unit": "ms"}]})
    )
    assert "bench 6.93 ms" in fill_figures(text, {}, tmp_path)


def test_walk_needs_a_number_or_all(folder: Path):
    done = CliRunner().invoke(app, ["walk", "--folder", str(folder)])
    assert done.exit_code == 2 and "give a walkthrough number" in done.output
    done = CliRunner().invoke(app, ["walk", "7", "--auto", "--folder", str(folder)])
    assert done.exit_code == 2 and "no walkthrough '7'" in done.output
