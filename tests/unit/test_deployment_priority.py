"""A training run started from a deployment yields the CPU to landing and serving; one started
in a terminal keeps its priority (checked in fresh interpreters: niceness cannot be undone)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os; from pipeline.deployments import yield_to_serving; "
    "before = os.nice(0); yield_to_serving(7); print(os.nice(0) - before)"
)


def niceness_gained(env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_a_deployment_run_lowers_its_priority():
    env = {**os.environ, "PREFECT__RUNTIME__DEPLOYMENT__ID": "3c1f8d0e-0000-4000-8000-000000000001"}
    assert niceness_gained(env) == min(19, os.nice(0) + 7) - os.nice(0)  # 19 is the lowest


def test_a_run_started_in_a_terminal_keeps_its_priority():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__RUNTIME__")}
    assert niceness_gained(env) == 0
