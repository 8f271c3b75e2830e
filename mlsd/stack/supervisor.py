"""The supervisor: start components detached and healthy, report on them, and stop only our own."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlsd.netutil import http_ok, port_is_free
from mlsd.stack.component import WATCHDOG, Component, RunRecord
from mlsd.stack.processes import (
    TreeMemory,
    is_running,
    record_processes,
    same_process,
    spawn_detached,
    terminate,
    tree_memory,
)

if TYPE_CHECKING:
    from mlsd.settings import Settings, StackSettings

# A component without a health check counts as started once it has stayed alive this long,
# so one that crashes on a bad argument fails `mlsd up` instead of the watchdog's patience.
NO_HEALTH_CHECK_SETTLE_SECONDS = 1.0

# What `start` reports as it goes: (component name, what happened).
OnEvent = Callable[[str, str], None]


class StackError(RuntimeError):
    """A component could not be started or did not become healthy."""


@dataclass(frozen=True)
class SupervisionPolicy:
    """How patiently the supervisor waits, and how often the watchdog restarts a crashed component."""

    health_timeout_seconds: float = 120.0
    max_restarts: int = 3
    restart_backoff_seconds: float = 2.0
    restart_backoff_max_seconds: float = 60.0
    watchdog_poll_seconds: float = 2.0
    stop_grace_seconds: float = 10.0

    @classmethod
    def from_settings(cls, stack: StackSettings) -> SupervisionPolicy:
        return cls(**stack.model_dump())

    def restart_delay(self, restarts_done: int) -> float:
        """Wait before the next restart: exponential backoff, capped."""
        delay = self.restart_backoff_seconds * (2**restarts_done)
        return float(min(delay, self.restart_backoff_max_seconds))


@dataclass(frozen=True)
class ComponentStatus:
    """One row of `mlsd status`."""

    name: str
    state: str  # healthy | unhealthy | running | restarting | down | failed
    pid: int | None
    port: int | None
    url: str | None
    uptime_seconds: float | None
    restarts: int
    rss_bytes: int
    pss_bytes: int  # proportional: shared pages split among their processes (processes.tree_memory)
    log_file: Path


def start_levels(components: Sequence[Component]) -> list[list[Component]]:
    """Group components into start waves: each wave only depends on earlier waves.

    Components of one wave start together: independent servers then share the wait for their
    imports and migrations. Dependencies outside `components` are taken as already
    satisfied; the caller checks they run.
    """
    by_name = {c.name: c for c in components}
    if len(by_name) != len(components):
        raise StackError("component names must be unique")
    if WATCHDOG in by_name:
        raise StackError(f"{WATCHDOG!r} is reserved for the supervisor's watchdog")
    waves: list[list[Component]] = []
    placed: set[str] = set()
    remaining = list(components)
    while remaining:
        wave = [c for c in remaining if all(d in placed or d not in by_name for d in c.depends_on)]
        if not wave:
            cycle = ", ".join(c.name for c in remaining)
            raise StackError(f"dependency cycle among: {cycle}")
        waves.append(wave)
        placed |= {c.name for c in wave}
        remaining = [c for c in remaining if c.name not in placed]
    return waves


def with_dependencies(components: Sequence[Component], names: Iterable[str]) -> list[Component]:
    """The named components and everything they depend on, in their original order."""
    by_name = {c.name: c for c in components}
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in by_name:
            known = ", ".join(by_name)
            raise StackError(f"unknown component {name!r}; known: {known}")
        if name not in wanted:
            wanted.add(name)
            todo += by_name[name].depends_on
    return [c for c in components if c.name in wanted]


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, to show why a component failed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Supervisor:
    """Starts, watches and stops the components of one lab, remembering them in `run_dir`.

    Every method works from the records on disk, so `mlsd up`, `mlsd status`, `mlsd down`
    and the watchdog, all separate processes, share one view of what runs.
    """

    def __init__(
        self, run_dir: Path, logs_dir: Path, policy: SupervisionPolicy | None = None
    ) -> None:
        # Absolute, because the watchdog and the components may run from another directory.
        self.run_dir = run_dir.resolve()
        self.logs_dir = logs_dir.resolve()
        self.policy = policy or SupervisionPolicy()

    @classmethod
    def from_settings(cls, settings: Settings) -> Supervisor:
        return cls(
            settings.run_dir, settings.logs_dir, SupervisionPolicy.from_settings(settings.stack)
        )

    # ---- records -------------------------------------------------------------------------

    def records(self) -> list[RunRecord]:
        """Records of the started components (not the watchdog), in start order."""
        if not self.run_dir.is_dir():
            return []
        found = [RunRecord.load(p) for p in self.run_dir.glob("*.json")]
        records = [r for r in found if r is not None and r.name != WATCHDOG]
        # Start order: dependencies first, then by name, so output and shutdown are stable.
        order = {c.name: i for i, c in enumerate(_flatten(start_levels(_components(records))))}
        return sorted(records, key=lambda r: order[r.name])

    def record(self, name: str) -> RunRecord | None:
        return RunRecord.load(RunRecord.path(self.run_dir, name))

    def _forget(self, name: str) -> None:
        RunRecord.path(self.run_dir, name).unlink(missing_ok=True)
        shutil.rmtree(self.metrics_dir(name), ignore_errors=True)

    def metrics_dir(self, name: str) -> Path:
        """The metrics directory of component `name` (mlsd.stack.processes.PROCESS_LOCAL_ENV)."""
        return self.run_dir / "metrics" / name

    def is_up(self, record: RunRecord | None) -> bool:
        """Whether the record's process is alive and still the one we started."""
        return record is not None and is_running(same_process(record.pid, record.create_time))

    # ---- start ---------------------------------------------------------------------------

    def start(
        self, components: Sequence[Component], on_event: OnEvent | None = None
    ) -> list[RunRecord]:
        """Start each component that is not already running, wave by wave, and wait until healthy.

        If any component fails, everything this call started is stopped again before the
        error propagates, so a failed `mlsd up` leaves nothing half-running.
        """
        emit = on_event or (lambda _name, _what: None)
        names = {c.name for c in components}
        for component in components:
            for dep in component.depends_on:
                if dep not in names and not self.is_up(self.record(dep)):
                    raise StackError(f"{component.name} needs {dep}, which is not running")
        started: list[RunRecord] = []
        result: list[RunRecord] = []
        try:
            for wave in start_levels(components):
                waiting: list[RunRecord] = []
                for component in wave:
                    existing = self.record(component.name)
                    if existing is not None and self.is_up(existing):
                        emit(component.name, f"already running (pid {existing.pid})")
                        waiting.append(existing)
                        continue
                    record = self._spawn(component)
                    started.append(record)
                    waiting.append(record)
                    emit(component.name, f"started (pid {record.pid})")
                self.wait_healthy(waiting, emit)
                result += waiting
        except BaseException:
            # Ctrl-C included: stop what we started, newest first, then report.
            for record in reversed(started):
                self.stop_record(record)
            raise
        return result

    def _spawn(self, component: Component, restarts: int = 0) -> RunRecord:
        if component.port is not None and not port_is_free(component.host, component.port):
            raise StackError(
                f"{component.name}: port {component.port} on {component.host} is already in use "
                "by a process the lab did not start; stop it or choose another port "
                "(`mlsd config show` lists the port settings)"
            )
        note = f" (restart {restarts})" if restarts else ""
        proc = spawn_detached(component, note=note, metrics_dir=self.metrics_dir(component.name))
        record = RunRecord(
            component=component, pid=proc.pid, create_time=proc.create_time(), restarts=restarts
        )
        record.save(self.run_dir)
        return record

    def respawn(self, record: RunRecord) -> RunRecord:
        """Start a crashed component again under the same record (the watchdog's restart)."""
        return self._spawn(record.component, restarts=record.restarts + 1)

    def wait_healthy(self, records: Sequence[RunRecord], on_event: OnEvent | None = None) -> None:
        """Block until each record's component answers its health check; fail fast if one dies."""
        emit = on_event or (lambda _name, _what: None)
        begun = time.monotonic()
        pending = {r.name: r for r in records}
        while pending:
            for name, record in list(pending.items()):
                component = record.component
                if not self.is_up(record):
                    raise StackError(
                        f"{name} exited during start-up; last lines of {component.log_file}:\n"
                        f"{log_tail(component.log_file)}"
                    )
                if component.health_url is None:
                    ready = time.monotonic() - begun >= NO_HEALTH_CHECK_SETTLE_SECONDS
                else:
                    ready = http_ok(component.health_url, timeout=1.0)
                if ready:
                    emit(name, f"healthy after {time.monotonic() - begun:.1f} s")
                    del pending[name]
                    continue
                timeout = component.health_timeout_seconds or self.policy.health_timeout_seconds
                if time.monotonic() - begun > timeout:
                    raise StackError(
                        f"{name} not healthy at {component.health_url} after {timeout:.0f} s; "
                        f"last lines of {component.log_file}:\n{log_tail(component.log_file)}"
                    )
            if pending:
                time.sleep(0.25)

    # ---- watchdog ------------------------------------------------------------------------

    def watchdog_record(self) -> RunRecord | None:
        return self.record(WATCHDOG)

    def ensure_watchdog(self) -> RunRecord:
        """Start the watchdog unless one is already watching this run directory."""
        existing = self.watchdog_record()
        if existing is not None and self.is_up(existing):
            return existing
        argv = (
            sys.executable,
            "-m",
            "mlsd.stack.watchdog",
            f"--run-dir={self.run_dir}",
            f"--logs-dir={self.logs_dir}",
            f"--policy={json.dumps(asdict(self.policy))}",
        )
        component = Component(name=WATCHDOG, argv=argv, log_file=self.logs_dir / f"{WATCHDOG}.log")
        proc = spawn_detached(component, metrics_dir=self.metrics_dir(WATCHDOG))
        record = RunRecord(component=component, pid=proc.pid, create_time=proc.create_time())
        record.save(self.run_dir)
        return record

    # ---- stop ----------------------------------------------------------------------------

    def stop_record(self, record: RunRecord) -> int:
        """Stop one started component (its whole process group) and forget it.

        Returns how many processes were stopped; 0 also when the recorded pid now belongs to a
        process the lab did not start, which is left alone.
        """
        return self._stop_together([record])[0][1]

    def _stop_together(self, records: Sequence[RunRecord]) -> list[tuple[str, int]]:
        # One grace period for all of them: servers shut down in parallel, not one by one.
        procs = {r.name: record_processes(r) for r in records}
        terminate([p for group in procs.values() for p in group], self.policy.stop_grace_seconds)
        for record in records:
            self._forget(record.name)
        return [(name, len(group)) for name, group in procs.items()]

    def stop(self, names: Iterable[str] | None = None) -> list[tuple[str, int]]:
        """Stop the named components (default: all, and the watchdog first), last wave first.

        Returns (name, processes stopped) per record.
        """
        stopped: list[tuple[str, int]] = []
        wanted = None if names is None else set(names)
        if wanted is None:
            # First, so it does not restart what we are about to stop.
            watchdog = self.watchdog_record()
            if watchdog is not None:
                stopped += self._stop_together([watchdog])
        records = {r.name: r for r in self.records() if wanted is None or r.name in wanted}
        for wave in reversed(start_levels(_components(records.values()))):
            stopped += self._stop_together([records[c.name] for c in wave])
        return stopped

    # ---- report --------------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        """What each started component is doing now, probing health over HTTP."""
        rows: list[ComponentStatus] = []
        now = time.time()
        for record in self.records():
            component = record.component
            proc = same_process(record.pid, record.create_time)
            alive = is_running(proc)
            if record.state == "failed":
                state = "failed"
            elif not alive:
                state = "restarting" if record.state == "restarting" else "down"
            elif component.health_url is None:
                state = "running"
            else:
                state = "healthy" if http_ok(component.health_url, timeout=1.0) else "unhealthy"
            memory = tree_memory(proc) if alive and proc is not None else TreeMemory(0, 0)
            rows.append(
                ComponentStatus(
                    name=record.name,
                    state=state,
                    pid=record.pid if alive else None,
                    port=component.port,
                    url=component.url,
                    uptime_seconds=now - record.create_time if alive else None,
                    restarts=record.restarts,
                    rss_bytes=memory.rss,
                    pss_bytes=memory.pss,
                    log_file=component.log_file,
                )
            )
        return rows


def _components(records: Iterable[RunRecord]) -> list[Component]:
    return sorted((r.component for r in records), key=lambda c: c.name)


def _flatten(waves: list[list[Component]]) -> list[Component]:
    return [c for wave in waves for c in wave]
