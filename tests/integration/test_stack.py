"""`mlsd up / status / down` on real servers: detached, healthy, restarted when killed, fully stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mlsd.netutil import free_port, http_ok, port_is_free
from mlsd.stack import RunRecord, Supervisor
from mlsd.stack.component import Component
from mlsd.stack.processes import is_running, record_processes
from mlsd.telemetry import QUIET_LIBRARIES

pytestmark = pytest.mark.integration

# The real `mlsd` entry point, as `mlsd.commands.demo` runs it: if `mlsd up` went missing from
# mlsd/cli.py, every command here would fail.
CLI = [sys.executable, "-m", "mlsd.cli"]


@dataclass
class Lab:
    """A data directory with its own ports, and the `mlsd` command line pointed at it."""

    data_dir: Path
    env: dict[str, str]
    up_seconds: float = 0.0

    def mlsd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=self.data_dir.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.data_dir / "run", self.data_dir / "logs")

    def record(self, name: str) -> RunRecord:
        record = self.supervisor.record(name)
        assert record is not None, f"no record for {name}"
        return record


def lab_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSD_")}
    env.update(QUIET_LIBRARIES)
    env.update({"MLSD_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra})
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    data_dir = tmp_path_factory.mktemp("stack") / "lab"
    env = lab_env(
        data_dir,
        MLSD_MLFLOW__PORT=str(free_port()),
        MLSD_PREFECT__PORT=str(free_port()),
        # Quick restarts keep the test short; the defaults (2 s doubling, 2 s polls) suit people.
        MLSD_STACK__RESTART_BACKOFF_SECONDS="0.5",
        MLSD_STACK__WATCHDOG_POLL_SECONDS="0.5",
    )
    lab = Lab(data_dir, env)
    started = time.monotonic()
    # The stack core only: model servers and the router need trained models (tested elsewhere).
    result = lab.mlsd("up", "--only", "mlflow", "--only", "prefect", timeout=300)
    lab.up_seconds = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        print(f"\n`mlsd up` (MLflow and Prefect together): {lab.up_seconds:.1f} s\n{result.stdout}")
        yield lab
    finally:
        lab.mlsd("down")


def wait_for(predicate, timeout: float, what: str) -> float:
    begun = time.monotonic()
    while time.monotonic() - begun < timeout:
        if predicate():
            return time.monotonic() - begun
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_up_returns_and_leaves_both_servers_healthy_in_the_background(lab):
    for name in ("mlflow", "prefect", "watchdog"):
        record = lab.record(name)
        proc = psutil.Process(record.pid)
        assert is_running(proc)
        # Detached: its own session, so neither the terminal nor `mlsd up` holds it.
        assert os.getsid(record.pid) == record.pid
    mlflow, prefect = lab.record("mlflow").component, lab.record("prefect").component
    assert mlflow.host == prefect.host == "127.0.0.1"
    assert mlflow.health_url and http_ok(mlflow.health_url)
    assert prefect.health_url and prefect.health_url.endswith("/api/health")
    assert http_ok(prefect.health_url)
    assert (lab.data_dir / "mlflow" / "mlflow.db").is_file()
    assert (lab.data_dir / "prefect" / "prefect.db").is_file()
    assert {p.name for p in (lab.data_dir / "logs").iterdir()} >= {
        "mlflow.log",
        "prefect.log",
        "watchdog.log",
    }


def test_up_again_finds_everything_running(lab):
    result = lab.mlsd("up", "--only", "mlflow", "--only", "prefect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mlflow: already running" in result.stdout
    assert "prefect: already running" in result.stdout


def test_status_reports_each_component_with_its_memory(lab):
    result = lab.mlsd("status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["components"]}
    assert set(rows) == {"mlflow", "prefect"}
    assert data["watchdog_pid"] == lab.record("watchdog").pid
    for name, row in rows.items():
        assert row["state"] == "healthy"
        assert row["pid"] == lab.record(name).pid
        assert row["port"] == int(lab.env[f"MLSD_{name.upper()}__PORT"])
        assert row["uptime_seconds"] > 0
        assert row["restarts"] == 0
        assert row["rss_bytes"] > 50 * 2**20
        assert 0 < row["pss_bytes"] <= row["rss_bytes"]

    print("\nmemory of the local stack (measured, not asserted):")
    for name in ("mlflow", "prefect"):
        procs = record_processes(lab.record(name))
        rss = sum(p.memory_info().rss for p in procs)
        uss = sum(p.memory_full_info().uss for p in procs)
        print(
            f"  {name}: {len(procs)} processes, RSS {rss / 2**20:.0f} MiB, USS {uss / 2**20:.0f} MiB"
        )

    table = lab.mlsd("status")
    assert table.returncode == 0
    for text in ("mlflow", "prefect", "healthy", "watchdog pid"):
        assert text in table.stdout


def test_watchdog_restarts_a_killed_component(lab):
    before = lab.record("mlflow")
    # MLflow's server is one process (mlsd.stack.mlflow_server). A leader whose child outlives
    # it holding the port is tested in tests/unit/test_stack_supervisor.py.
    assert [p.pid for p in record_processes(before)] == [before.pid]
    os.kill(before.pid, signal.SIGKILL)

    def restarted_and_healthy() -> bool:
        record = lab.supervisor.record("mlflow")
        return (
            record is not None
            and record.pid != before.pid
            and record.state == "running"
            and http_ok(before.component.health_url or "", timeout=1)
        )

    took = wait_for(restarted_and_healthy, 180, "mlflow to be restarted and healthy")
    print(f"\nmlflow restarted by the watchdog and healthy {took:.1f} s after the kill")
    after = lab.record("mlflow")
    assert after.restarts == 1
    watchdog_log = (lab.data_dir / "logs" / "watchdog.log").read_text()
    assert f"mlflow (pid {before.pid}) exited; restart 1 of 3" in watchdog_log
    status = json.loads(lab.mlsd("status", "--json").stdout)
    assert {r["name"]: r["restarts"] for r in status["components"]} == {"mlflow": 1, "prefect": 0}


def test_down_stops_every_process_it_started(lab):
    supervisor = lab.supervisor
    records = [*supervisor.records(), lab.record("watchdog")]
    procs = [p for record in records for p in record_processes(record)]
    assert len(procs) >= 3  # mlflow, prefect, the watchdog

    result = lab.mlsd("down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [p for p in procs if is_running(p)]
    assert not list((lab.data_dir / "run").glob("*.json"))
    for name in ("MLFLOW", "PREFECT"):
        assert port_is_free("127.0.0.1", int(lab.env[f"MLSD_{name}__PORT"]))
    assert "nothing was running" in lab.mlsd("down").stdout


def test_down_leaves_alone_a_process_that_took_over_a_recorded_pid(tmp_path):
    # A process the lab did not start, in its own process group, now holding the recorded pid:
    # as if our component had died and the OS had given its pid to someone else.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        data_dir = tmp_path / "lab"
        component = Component(
            name="mlflow", argv=("mlflow", "server"), log_file=data_dir / "logs" / "mlflow.log"
        )
        true_start = psutil.Process(stranger.pid).create_time()
        RunRecord(component=component, pid=stranger.pid, create_time=true_start - 5.0).save(
            data_dir / "run"
        )
        result = Lab(data_dir, lab_env(data_dir)).mlsd("down")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "mlflow: already gone" in result.stdout
        assert stranger.poll() is None, "down killed a process the lab did not start"
        assert not (data_dir / "run" / "mlflow.json").exists()
    finally:
        stranger.kill()
        stranger.wait()
