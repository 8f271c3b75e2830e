"""The whole local stack's memory, as a user runs it: `mlsd demo --keep-up` in a temporary lab
(simulate, gate, build features, bring the stack up, train both models, serve live traffic
with a shadow and a canary), then `mlsd status --json` for each component's resident memory
(its whole process tree) and the watchdog's, then `mlsd down`.

The issue's budget: the whole stack under 3 GB on 2 cores (recorded in GB, 10^9 bytes). It
needs the stack's default ports free (MLflow 5000, Prefect 4200, router 8080, model servers
8081-8083).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.record import Figure, load, record
from mlsd.stack.processes import memory_rss
from mlsd.telemetry import TELEMETRY_OFF

BUDGET_GB = 3.0  # the "under 3 GB" (2.79 GiB)


def mlsd(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlsd.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def measure(lab: Path) -> tuple[dict[str, Any], float]:
    # Only this lab's settings: nothing from the caller's MLflow, Prefect or lab.
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLSD_", "MLFLOW_", "PREFECT_"))
        },
        **TELEMETRY_OFF,
        "MLSD_DATA_DIR": str(lab / ".mlsd"),
    }
    started = time.perf_counter()
    try:
        demo = mlsd(["demo", "--keep-up"], env, lab)
        demo_s = time.perf_counter() - started
        if demo.returncode != 0:
            raise RuntimeError(f"mlsd demo failed:\n{(demo.stdout + demo.stderr)[-4000:]}")
        status = mlsd(["status", "--json"], env, lab)
        if status.returncode != 0:
            raise RuntimeError(f"mlsd status failed:\n{status.stderr[-2000:]}")
        data = json.loads(status.stdout)
        # Read while the stack still runs (the `down` below stops the watchdog too).
        watchdog = data.get("watchdog_pid")
        data["watchdog_rss"] = memory_rss(psutil.Process(watchdog)) if watchdog else 0
        return data, demo_s
    finally:
        mlsd(["down"], env, lab)


def main() -> None:
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        status, demo_s = measure(Path(tmp))
    rows = sorted(status["components"], key=lambda r: -r["rss_bytes"])
    watchdog_rss = status["watchdog_rss"]
    total = sum(r["rss_bytes"] for r in rows) + watchdog_rss
    # "running": alive, for a component with no health check of its own (the flow server).
    unhealthy = [r["name"] for r in rows if r["state"] not in ("healthy", "running")]
    figures = [Figure(f"{r['name']} RSS", r["rss_bytes"] / 2**20, "MiB") for r in rows]
    figures += [
        Figure("watchdog RSS", watchdog_rss / 2**20, "MiB"),
        Figure(
            "whole stack RSS", total / 1e9, "GB", f"< {BUDGET_GB:g} GB", total / 1e9 < BUDGET_GB
        ),
        Figure("components not healthy", float(len(unhealthy)), "components", "0", not unhealthy),
    ]
    record(
        "stack",
        figures,
        {"components": len(rows), "demo_s": round(demo_s, 1)},
        concurrency="after the demo's traffic (fraud and recs bursts, a shadow, a canary)",
        notes="RSS of each component's process tree (MLflow's and Prefect's workers included), "
        "read by `mlsd status --json` at the end of `mlsd demo --keep-up`, on the default data "
        "and settings. RSS counts shared library pages once per process, so the sum "
        "overstates what the stack takes from the machine."
        + (f" Not healthy: {', '.join(unhealthy)}." if unhealthy else ""),
        load_before=before,
    )


if __name__ == "__main__":
    main()
