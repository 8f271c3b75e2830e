"""Process mechanics of the supervisor: spawn detached, recognise our own processes, stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import psutil

from mlsd.stack.component import Component, RunRecord
from mlsd.telemetry import with_quiet_libraries

# psutil reports start times in clock ticks (10 ms); a recycled pid starts at least a tick later.
CREATE_TIME_TOLERANCE = 0.005


# What importing a library writes into its own process's environment, for that process alone.
# Feast's metrics module makes a temporary directory for prometheus_client's multiprocess
# files, exports it here, and deletes it when the importing process exits. `mlsd demo` imports
# Feast before it starts the stack: every component inherited the demo's directory, and once
# the demo exited (--keep-up) each flow run that touched Feast failed (FileNotFoundError:
# /tmp/feast_metrics_*/gauge_liveall_<pid>.db), so monitoring and landing stopped. Each
# component is given a directory of its own instead (Feast keeps one it finds set), in the
# lab's run directory and emptied when it starts: a component that `mlsd down` stops by signal
# never reaches Feast's exit hook, and its own temporary directories stayed in /tmp, one per
# stopped process (139 after a day of labs).
PROCESS_LOCAL_ENV = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")


# How the components allocate memory, unless the environment says otherwise. Both hand freed
# memory back to the system instead of keeping it for reuse; the runs that build feature tables
# and training sets free hundreds of MB of temporary arrays, and what an allocator keeps stays
# resident (and counted) for the rest of the run. Measured on a demo's world after its acts
# (2 cores), peak RSS above the imports:
# - Arrow's allocator: jemalloc, as Arrow configures it, returns pages within about a second;
#   Arrow's default, mimalloc, keeps them. A fraud retrain's training set: 816-876 MB with
#   mimalloc, 652-660 MB with jemalloc; same frame, same time.
# - glibc's malloc: above this size an array gets its own mapping, returned when freed. By
#   default glibc raises the threshold (up to 32 MB) each time such an array is freed, so later
#   numpy and pandas arrays come from a heap it does not shrink. A landing run's feature build:
#   536 -> 378 MB, and 133 -> 86 MB still held after it; a retrain's training set 654 -> 565 MB.
#   Fresh mappings cost page faults: CPU +6 % (build) to +12 % (training set) at 1 MiB, +13 %
#   for the build at 128 KiB (glibc's starting value) for the same memory; 4 MiB kept 444 MB.
# The stack's sum of PSS with both is in benchmarks/results/loop.json.
# Set as they are, not checked against the Arrow at hand: checking would import pyarrow into
# `mlsd up` and the long-lived watchdog (0.18 s and about 20 MB there). The Linux wheel the lock
# installs has jemalloc; a build without it logs one "Unsupported backend" line at its first
# allocation and keeps its default (tried with a backend it lacks).
ALLOCATOR_ENV: dict[str, str] = {
    "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",
    "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024),  # bytes, fixed; other C libraries ignore it
}


def component_env(
    component: Component,
    base: Mapping[str, str] | None = None,
    metrics_dir: Path | None = None,
) -> dict[str, str]:
    """The environment a component runs with: inherited (less what a library set for the parent
    alone, or `metrics_dir` in its place), then the libraries quiet (mlsd.telemetry), the allocators' settings
    (unless set), then its own."""
    env = dict(os.environ if base is None else base)
    for key in PROCESS_LOCAL_ENV:
        env.pop(key, None)
        if metrics_dir is not None:
            env[key] = str(metrics_dir)
    env = with_quiet_libraries(env)
    for key, value in ALLOCATOR_ENV.items():
        env.setdefault(key, value)
    # Logs reach the file as they happen, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(component.env)
    return env


def spawn_detached(
    component: Component, note: str = "", metrics_dir: Path | None = None
) -> psutil.Process:
    """Start `component` in its own session (so its own process group) with output to its log,
    and with `metrics_dir` (emptied first) as its own metrics directory (PROCESS_LOCAL_ENV).

    A new session detaches it from the terminal: `mlsd up` can return and Ctrl-C in that
    terminal does not reach it, and the group lets `mlsd down` stop the children it spawns.
    """
    for directory in (component.log_file.parent, *component.state_dirs):
        directory.mkdir(parents=True, exist_ok=True)
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)  # the files of its previous run
        metrics_dir.mkdir(parents=True, exist_ok=True)
    with component.log_file.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(
            f"\n=== {stamp} mlsd starts {component.name}{note}: {' '.join(component.argv)}\n".encode()
        )
        log.flush()
        popen = subprocess.Popen(
            list(component.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=component_env(component, metrics_dir=metrics_dir),
            cwd=component.cwd,
            start_new_session=True,
            close_fds=True,
        )
    return psutil.Process(popen.pid)


def same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `create_time`, else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_running(proc: psutil.Process | None) -> bool:
    """Alive and not a zombie (a dead child its parent has not reaped yet)."""
    if proc is None:
        return False
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def record_processes(record: RunRecord) -> list[psutil.Process]:
    """Every live process that belongs to the started component: leader, group and descendants.

    Children outlive a killed leader (a server's worker keeps the port, as MLflow's uvicorn
    did while `mlflow server` ran it as a child), so they are found through the process group,
    which is the leader's pid. Only processes started no earlier than the leader count. If the leader's pid now belongs to another process, the
    group is not ours: Linux does not hand out a pid still in use as a group id, so a reused
    pid means our group had already emptied.
    """
    leader = same_process(record.pid, record.create_time)
    if leader is None and psutil.pid_exists(record.pid):
        return []
    found: dict[int, psutil.Process] = {}
    if leader is not None:
        found[leader.pid] = leader
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update({p.pid: p for p in leader.children(recursive=True)})
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me:
            continue
        try:
            if (
                os.getpgid(proc.pid) == record.pid
                and proc.create_time() >= record.create_time - CREATE_TIME_TOLERANCE
            ):
                found[proc.pid] = proc
        except (OSError, psutil.Error):
            continue
    return list(found.values())


def terminate(procs: Iterable[psutil.Process], grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace_seconds`; reap our own children."""
    procs = list(procs)
    for proc in procs:
        # psutil checks the pid is still this very process before it signals.
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    left = _wait_until_dead(procs, grace_seconds)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _wait_until_dead(left, 5.0)
    for proc in procs:
        # A dead child of ours stays a zombie until waited for.
        try:
            if proc.ppid() == os.getpid():
                proc.wait(timeout=0)
        except (psutil.Error, ChildProcessError):
            pass


def _wait_until_dead(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `procs` still running after `timeout`. A zombie counts as dead: psutil's own
    wait_procs would wait out the timeout for an orphan zombie its new parent reaps late."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if is_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    return alive


def memory_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 if it is gone). Each
    process counts every page it maps, shared libraries included, so a sum over processes that
    load the same libraries counts those pages once per process: see `tree_memory`."""
    [rss] = _over_tree(proc, lambda p: (p.memory_info().rss,), 1)
    return rss


class TreeMemory(NamedTuple):
    rss: int  # resident: every page each process maps, shared ones once per process
    pss: int  # proportional: a page shared by k processes counts 1/k in each


def tree_memory(proc: psutil.Process) -> TreeMemory:
    """RSS and PSS of a process and all its descendants, in bytes (0 if it is gone), from one
    read per process. A sum of PSS over processes is what they cost the machine together.
    Where the system gives no PSS (not Linux, or another user's process), its RSS."""

    def read(p: psutil.Process) -> tuple[int, int]:
        try:
            info = p.memory_full_info()
        except psutil.AccessDenied:
            info = p.memory_info()
        return int(info.rss), int(getattr(info, "pss", info.rss))

    rss, pss = _over_tree(proc, read, 2)
    return TreeMemory(rss, pss)


def _over_tree(
    proc: psutil.Process, read: Callable[[psutil.Process], tuple[int, ...]], width: int
) -> list[int]:
    """The sums of the `width` figures `read` gives, over a process and its descendants (zeros
    if it is gone; a descendant gone meanwhile counts nothing)."""
    totals = [0] * width
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return totals
    for member in members:
        try:
            values = read(member)
        except psutil.NoSuchProcess:
            continue
        for i, value in enumerate(values):
            totals[i] += value
    return totals
