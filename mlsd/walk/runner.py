"""Run a walkthrough's steps against the live stack, check each against its stated expectation,
and keep the figures the steps record in a results file the walkthrough and the rehearsal show.

`check_output` is the pure judgement (a step's expectations against what came); `run_step` is
the thin I/O around it: a shell command in the repository, `mlsd` being this lab's own CLI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsd.walk.document import PLACEHOLDER, Step, Walkthrough

REPO = Path(__file__).resolve().parents[2]
WALKTHROUGHS = REPO / "walkthroughs"
BENCH_RESULTS = REPO / "benchmarks" / "results"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAIL_LINES = 12


@dataclass
class StepResult:
    step: Step
    exit_code: int | None  # None: timed out
    output: str
    seconds: float
    problems: list[str] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_output(
    step: Step, exit_code: int | None, output: str
) -> tuple[list[str], dict[str, str]]:
    """What is wrong with a step's run (empty: it met every expectation), and the figures its
    `record:` lines captured. Each problem names what was expected and what came."""
    problems: list[str] = []
    if exit_code is None:
        problems.append(f"expected it to finish within {step.timeout_s:g} s; it was still running")
    elif exit_code != step.exit_code:
        problems.append(f"expected exit code {step.exit_code}; it exited with {exit_code}")
    for pattern in step.expect:
        if not re.search(pattern, output, re.MULTILINE):
            problems.append(f"expected the output to match /{pattern}/; it did not")
    for pattern in step.expect_not:
        if found := re.search(pattern, output, re.MULTILINE):
            problems.append(f"expected no /{pattern}/ in the output; found {found.group(0)!r}")
    recorded: dict[str, str] = {}
    for capture in step.captures:
        match = re.search(capture.pattern, output, re.MULTILINE)
        if match is None or match.group(1) is None:
            problems.append(
                f"expected to record {capture.name} from /{capture.pattern}/; nothing matched"
            )
        else:
            recorded[capture.name] = match.group(1)
    return problems, recorded


def failure_report(walkthrough: Walkthrough, result: StepResult) -> str:
    """Which step failed, what was expected and what came (the output's last lines)."""
    step = result.step
    where = f"{walkthrough.path.name}:{step.line}"
    tail = "\n".join(result.output.rstrip().splitlines()[-_TAIL_LINES:]) or "(no output)"
    lines = [f"walkthrough {walkthrough.number}, step {step.index} ({where}): {step.title}"]
    lines += [f"  $ {step.run}"]
    lines += [f"  - {p}" for p in result.problems]
    lines += ["  what came (last lines):", *("    " + line for line in tail.splitlines())]
    return "\n".join(lines)


_PROGRAM = re.compile(r"(^|[;&|(]\s*)(mlsd|python)(?=\s|$)")


def command_line(run: str) -> str:
    """The step's shell command with each `mlsd` (and `python`) that starts a command made this
    environment's own, so a step runs the same code whether or not the virtualenv is active."""
    python = shlex.quote(sys.executable)

    def own(match: re.Match[str]) -> str:
        program = f"{python} -m mlsd.cli" if match.group(2) == "mlsd" else python
        return match.group(1) + program

    return _PROGRAM.sub(own, run)


def step_env() -> dict[str, str]:
    """The environment a step runs in: this lab's settings, telemetry off, and the addresses a
    step's command may quote: $ROUTER, $MLFLOW, $PREFECT (the UIs and APIs of this lab) and
    $FRAUD_SERVER, $RECSYS_SERVER (the model servers)."""
    from mlsd.settings import Settings
    from mlsd.telemetry import with_quiet_libraries

    settings = Settings()
    env = with_quiet_libraries(os.environ)
    env["ROUTER"] = f"http://{settings.client_host}:{settings.router.port}"
    env["MLFLOW"] = settings.mlflow_tracking_uri
    env["PREFECT"] = settings.prefect_api_url.removesuffix("/api")
    env["FRAUD_SERVER"] = settings.model_server_url("fraud")
    env["RECSYS_SERVER"] = settings.model_server_url("recsys")
    # Prefect's own CLI in a step talks to this lab's server, not a temporary one.
    for key, value in settings.prefect_client_env.items():
        env.setdefault(key, value)
    # Wide enough that a table's row stays on one line for the expectations to read.
    env.setdefault("COLUMNS", "200")
    env["NO_COLOR"] = "1"
    env.setdefault("MLSD_WALK", "1")
    return env


def run_step(step: Step, cwd: Path = REPO) -> StepResult:
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command_line(step.run)],
            cwd=cwd,
            env=step_env(),
            capture_output=True,
            text=True,
            timeout=step.timeout_s,
            check=False,
        )
        exit_code: int | None = done.returncode
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        exit_code = None
        output = _text(err.stdout) + _text(err.stderr)
    output = _ANSI.sub("", output)
    problems, recorded = check_output(step, exit_code, output)
    return StepResult(step, exit_code, output, time.monotonic() - started, problems, recorded)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# --- the figures a run recorded ---------------------------------------------------------------


def results_path(data_dir: Path, number: str) -> Path:
    return data_dir / "walk" / f"{number}.json"


def load_results(data_dir: Path, number: str) -> dict[str, Any]:
    path = results_path(data_dir, number)
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_results(data_dir: Path, number: str, recorded: dict[str, str], at: float) -> Path:
    """Merge a run's figures into the walkthrough's results file (a figure keeps its time)."""
    path = results_path(data_dir, number)
    data = load_results(data_dir, number)
    values = data.get("values", {})
    for name, value in recorded.items():
        values[name] = {"value": value, "at": at}
    data = {"walkthrough": number, "updated_at": at, "values": values}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def bench_figure(spec: str, results_dir: Path = BENCH_RESULTS) -> str | None:
    """`bench:FILE:FIGURE` -> the figure `make bench` recorded (value and unit), or None."""
    _, _, rest = spec.partition(":")
    name, _, figure = rest.partition(":")
    path = results_dir / f"{name}.json"
    if not path.is_file():
        return None
    for row in json.loads(path.read_text()).get("figures", []):
        if row.get("name") == figure:
            value = row.get("value")
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            return f"{shown} {row.get('unit', '')}".strip()
    return None


def fill_figures(text: str, values: dict[str, Any], results_dir: Path = BENCH_RESULTS) -> str:
    """The text with each `{{name}}` replaced by the live figure (or a note that none is yet)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("bench:"):
            found = bench_figure(name, results_dir)
            return found if found is not None else "(not recorded yet: `make bench`)"
        entry = values.get(name)
        return str(entry["value"]) if entry else "(not measured yet: run the steps)"

    return PLACEHOLDER.sub(one, text)
