"""The watchdog `mlsd up` leaves behind: restarts crashed components, with backoff, a few times."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from mlsd.stack.component import RunRecord
from mlsd.stack.processes import is_running, record_processes, same_process, terminate
from mlsd.stack.supervisor import StackError, SupervisionPolicy, Supervisor

log = logging.getLogger("mlsd.watchdog")


class Watchdog:
    """One `tick` checks every recorded component once; the loop around it lives in `run`.

    A crash is handled in two steps so one slow restart never delays watching the others:
    first the leftovers of the crashed process group are stopped (they may hold its port)
    and a restart is scheduled after the backoff; a later tick performs it.
    """

    def __init__(self, supervisor: Supervisor, clock: Callable[[], float] = time.monotonic) -> None:
        self.supervisor = supervisor
        self.policy = supervisor.policy
        self.clock = clock
        # name -> (pid that died, when to restart it)
        self.scheduled: dict[str, tuple[int, float]] = {}

    def tick(self) -> bool:
        """Check each component once; False when nothing is left to watch."""
        records = self.supervisor.records()
        for record in records:
            if record.state != "failed":
                try:
                    self._check(record)
                except Exception:  # one component's trouble must not stop watching the rest
                    log.exception("%s: check failed", record.name)
        return bool(records)

    def _check(self, record: RunRecord) -> None:
        name = record.name
        if is_running(same_process(record.pid, record.create_time)):
            self.scheduled.pop(name, None)
            return
        scheduled = self.scheduled.get(name)
        if scheduled is None or scheduled[0] != record.pid:
            self._on_crash(record)
        elif self.clock() >= scheduled[1]:
            del self.scheduled[name]
            current = self.supervisor.record(name)
            if current is None or current.pid != record.pid:
                return  # stopped or started again by `mlsd down` / `mlsd up` meanwhile
            try:
                new = self.supervisor.respawn(current)
            except StackError as err:
                # Refused (its port taken by another process, say): it counts as a restart, so
                # a component that cannot come back is given up on, not retried forever.
                log.error("%s: restart refused: %s", name, err)
                current.restarts += 1
                current.save(self.supervisor.run_dir)
                return
            log.warning(
                "%s restarted: pid %d (restart %d of %d)",
                name,
                new.pid,
                new.restarts,
                self.policy.max_restarts,
            )

    def _on_crash(self, record: RunRecord) -> None:
        name = record.name
        current = self.supervisor.record(name)
        if current is None or current.pid != record.pid:
            return  # stopped or restarted by `mlsd down` / `mlsd up` since we listed it
        leftovers = record_processes(record)
        if leftovers:
            log.info(
                "%s: stopping %d leftover process(es) of pid %d", name, len(leftovers), record.pid
            )
            terminate(leftovers, self.policy.stop_grace_seconds)
        if record.restarts >= self.policy.max_restarts:
            log.error(
                "%s (pid %d) exited; gave up after %d restarts; see %s",
                name,
                record.pid,
                record.restarts,
                record.component.log_file,
            )
            record.state = "failed"
            record.save(self.supervisor.run_dir)
            return
        delay = self.policy.restart_delay(record.restarts)
        self.scheduled[name] = (record.pid, self.clock() + delay)
        log.warning(
            "%s (pid %d) exited; restart %d of %d in %.1f s",
            name,
            record.pid,
            record.restarts + 1,
            self.policy.max_restarts,
            delay,
        )
        record.state = "restarting"
        record.save(self.supervisor.run_dir)

    def is_current(self) -> bool:
        """Whether this process is still the recorded watchdog (`mlsd down` removes the record)."""
        own = self.supervisor.watchdog_record()
        return own is not None and own.pid == os.getpid()

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Tick every poll interval until stopped, superseded, or nothing is left to watch."""
        # `mlsd up` writes our record just after starting us: give it a moment to appear.
        for _ in range(50):
            if self.supervisor.watchdog_record() is not None or should_stop():
                break
            time.sleep(0.1)
        while not should_stop() and self.is_current():
            try:
                if not self.tick():
                    log.info("no components left to watch; exiting")
                    return
            except Exception:
                # Each component's restart is already guarded inside tick(); this is for what
                # tick itself needs (reading the run directory), which must not end the watching.
                log.exception("watchdog tick failed")
            deadline = time.monotonic() + self.policy.watchdog_poll_seconds
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsd.stack.watchdog", description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--logs-dir", type=Path, required=True)
    parser.add_argument("--policy", type=json.loads, default={}, help="SupervisionPolicy as JSON.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        log.info("signal %d: exiting", signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    supervisor = Supervisor(args.run_dir, args.logs_dir, SupervisionPolicy(**args.policy))
    log.info("watching %s (pid %d)", supervisor.run_dir, os.getpid())
    Watchdog(supervisor).run(lambda: stop_requested)


if __name__ == "__main__":
    main()
