"""The supervisor's logic on tiny stand-in processes: start order, health, restarts, safe stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlsd.netutil import free_port
from mlsd.stack import Component, RunRecord, StackError, SupervisionPolicy, Supervisor
from mlsd.stack.processes import (
    is_running,
    record_processes,
    same_process,
    tree_memory,
)
from mlsd.stack.supervisor import start_levels, with_dependencies
from mlsd.stack.watchdog import Watchdog

SLEEPER = (sys.executable, "-c", "import time; time.sleep(120)")
# A leader that starts a child in its own process group, as `mlflow server` starts uvicorn
# (the lab's MLflow runs uvicorn in place of it: mlsd.stack.mlflow_server).
PARENT_WITH_CHILD = (
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)",
)


def make(name: str, tmp_path: Path, argv=SLEEPER, **fields) -> Component:
    return Component(name=name, argv=argv, log_file=tmp_path / "logs" / f"{name}.log", **fields)


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(
        tmp_path / "run",
        tmp_path / "logs",
        SupervisionPolicy(health_timeout_seconds=5, stop_grace_seconds=2, max_restarts=2),
    )
    yield sup
    sup.stop()


def test_restart_delay_doubles_up_to_the_cap():
    policy = SupervisionPolicy(restart_backoff_seconds=2, restart_backoff_max_seconds=10)
    assert [policy.restart_delay(n) for n in range(5)] == [2, 4, 8, 10, 10]


def test_policy_defaults_match_the_stack_settings():
    from mlsd.settings import StackSettings

    assert SupervisionPolicy.from_settings(StackSettings()) == SupervisionPolicy()


def test_start_levels_put_dependencies_in_earlier_waves(tmp_path):
    mlflow = make("mlflow", tmp_path)
    prefect = make("prefect", tmp_path)
    server = make("fraud-server", tmp_path, depends_on=("mlflow",))
    router = make("router", tmp_path, depends_on=("fraud-server",))
    waves = start_levels([router, server, mlflow, prefect])
    assert [[c.name for c in wave] for wave in waves] == [
        ["mlflow", "prefect"],
        ["fraud-server"],
        ["router"],
    ]


def test_start_levels_reject_cycles_and_the_reserved_name(tmp_path):
    a = make("a", tmp_path, depends_on=("b",))
    b = make("b", tmp_path, depends_on=("a",))
    with pytest.raises(StackError, match="cycle"):
        start_levels([a, b])
    with pytest.raises(StackError, match="reserved"):
        start_levels([make("watchdog", tmp_path)])


def test_with_dependencies_adds_what_a_component_needs(tmp_path):
    components = [
        make("mlflow", tmp_path),
        make("prefect", tmp_path),
        make("fraud-server", tmp_path, depends_on=("mlflow",)),
    ]
    assert [c.name for c in with_dependencies(components, ["fraud-server"])] == [
        "mlflow",
        "fraud-server",
    ]
    with pytest.raises(StackError, match="known: mlflow, prefect, fraud-server"):
        with_dependencies(components, ["nope"])


def test_run_record_round_trips_and_ignores_garbage(tmp_path):
    record = RunRecord(component=make("mlflow", tmp_path, port=5000), pid=123, create_time=1.5)
    path = record.save(tmp_path)
    assert RunRecord.load(path) == record
    path.write_text("{not json")
    assert RunRecord.load(path) is None


def test_same_process_needs_the_matching_start_time():
    me = psutil.Process()
    assert same_process(me.pid, me.create_time()) is not None
    assert same_process(me.pid, me.create_time() - 1.0) is None


def test_start_status_stop_a_component(supervisor, tmp_path):
    [record] = supervisor.start([make("sleeper", tmp_path, env={"MARKER": "yes"})])
    proc = psutil.Process(record.pid)
    assert proc.environ()["MARKER"] == "yes"
    assert proc.environ()["DO_NOT_TRACK"] == "true"
    assert os.getsid(record.pid) == record.pid
    [row] = supervisor.status()
    assert (row.name, row.state, row.pid, row.restarts) == ("sleeper", "running", record.pid, 0)
    assert row.rss_bytes > 0 and 0 < row.pss_bytes <= row.rss_bytes
    assert supervisor.stop() == [("sleeper", 1)]
    assert not is_running(proc)
    assert supervisor.records() == []


def test_feasts_metrics_files_stay_in_the_lab_and_go_when_the_component_is_stopped(
    supervisor, tmp_path
):
    # Feast's metrics module writes prometheus_client's files to a directory it makes in /tmp
    # unless one is set, and deletes it only at a clean exit: `mlsd down` stops by signal.
    ready = tmp_path / "ready"
    importer = (
        sys.executable,
        "-c",
        "import os, pathlib, time, feast.metrics; "
        f"pathlib.Path({str(ready)!r}).write_text(os.environ['PROMETHEUS_MULTIPROCESS_DIR']); "
        "time.sleep(120)",
    )
    [record] = supervisor.start([make("feasty", tmp_path, argv=importer)])
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    own = supervisor.metrics_dir("feasty")
    assert ready.read_text() == str(own)
    assert psutil.Process(record.pid).environ()["PROMETHEUS_MULTIPROC_DIR"] == str(own)
    assert any(own.iterdir())  # Feast's metrics wrote their files there
    supervisor.stop()
    assert not own.exists()


def test_a_component_that_dies_at_start_fails_with_its_log(supervisor, tmp_path):
    crasher = make("crasher", tmp_path, argv=(sys.executable, "-c", "raise SystemExit('no db')"))
    with pytest.raises(StackError, match=r"(?s)crasher exited during start-up.*no db"):
        supervisor.start([crasher])
    assert supervisor.records() == []


def test_a_component_that_never_gets_healthy_is_stopped_again(supervisor, tmp_path):
    slow = make("slow", tmp_path, health_url="http://127.0.0.1:9/health", health_timeout_seconds=1)
    with pytest.raises(StackError, match="not healthy"):
        supervisor.start([slow])
    assert supervisor.records() == []
    assert not list((tmp_path / "run").glob("*.json"))


def test_a_taken_port_is_reported_before_starting(supervisor, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} .* already in use"):
            supervisor.start([make("taken", tmp_path, port=port)])


def test_stop_also_stops_the_children_of_a_killed_leader(supervisor, tmp_path):
    [record] = supervisor.start([make("parent", tmp_path, argv=PARENT_WITH_CHILD)])
    time.sleep(0.5)  # let it start its child
    group = record_processes(record)
    assert len(group) == 2
    os.kill(record.pid, signal.SIGKILL)
    time.sleep(0.2)
    orphans = [p for p in record_processes(record) if is_running(p)]
    assert len(orphans) == 1  # the child survived its leader
    supervisor.stop()
    assert not any(is_running(p) for p in group)


def test_stop_leaves_alone_a_process_that_took_over_the_pid(supervisor, tmp_path):
    stranger = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        started = psutil.Process(stranger.pid).create_time()
        RunRecord(
            component=make("ghost", tmp_path), pid=stranger.pid, create_time=started - 5
        ).save(supervisor.run_dir)
        assert supervisor.stop() == [("ghost", 0)]
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_watchdog_restarts_with_backoff_then_gives_up(supervisor, tmp_path):
    now = [0.0]
    watchdog = Watchdog(supervisor, clock=lambda: now[0])
    [first] = supervisor.start([make("sleeper", tmp_path)])

    assert watchdog.tick() is True  # alive: nothing to do
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(0.1)
    watchdog.tick()
    assert supervisor.record("sleeper").state == "restarting"
    now[0] += 1.0  # the first backoff (2 s) has not passed
    watchdog.tick()
    assert supervisor.record("sleeper").pid == first.pid
    now[0] += 1.5
    watchdog.tick()
    second = supervisor.record("sleeper")
    assert (second.pid != first.pid, second.restarts, second.state) == (True, 1, "running")
    assert supervisor.is_up(second)

    os.kill(second.pid, signal.SIGKILL)
    time.sleep(0.1)
    watchdog.tick()
    now[0] += 4.0  # the second backoff
    watchdog.tick()
    third = supervisor.record("sleeper")
    assert third.restarts == 2

    os.kill(third.pid, signal.SIGKILL)
    time.sleep(0.1)
    watchdog.tick()  # max_restarts=2 reached
    assert supervisor.record("sleeper").state == "failed"
    now[0] += 100
    watchdog.tick()
    assert supervisor.record("sleeper").pid == third.pid
    assert [row.state for row in supervisor.status()] == ["failed"]


def test_watchdog_exits_when_nothing_is_left(supervisor):
    assert Watchdog(supervisor).tick() is False


def test_a_refused_restart_counts_so_the_watchdog_gives_up(supervisor, tmp_path):
    """A crashed component whose port another process took cannot come back: each refused
    restart counts, and after max_restarts it is marked failed instead of retried forever."""
    import socket

    now = [0.0]
    watchdog = Watchdog(supervisor, clock=lambda: now[0])
    port = free_port()
    [first] = supervisor.start([make("server", tmp_path, port=port)])
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(0.1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        for _ in range(6):
            watchdog.tick()
            now[0] += 60.0
        record = supervisor.record("server")
    assert (record.state, record.restarts, record.pid) == ("failed", 2, first.pid)


# A parent fills 64 MiB, then forks children that keep it (copy-on-write, never written): the
# pages are resident in every process but in memory once.
FORKED_TREE = """
import os, sys, time
block = bytearray(os.urandom(64 * 2**20))
for _ in range(3):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PSS is read from Linux /proc")
def test_tree_memory_counts_pages_shared_by_a_process_tree_once_as_pss():
    tree = subprocess.Popen([sys.executable, "-c", FORKED_TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert tree.stdout is not None and tree.stdout.readline().strip() == "ready"
        proc = psutil.Process(tree.pid)
        assert len(proc.children()) == 3
        rss, pss = tree_memory(proc)
        block = 64 * 2**20
        # RSS counts the block in each of the four processes; PSS splits it among them.
        assert rss > 4 * block
        assert block < pss < 2 * block
    finally:
        for child in psutil.Process(tree.pid).children():
            child.kill()
        tree.kill()
        tree.wait()
