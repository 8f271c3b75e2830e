"""A process's CPU priority: the lab's serving processes keep theirs, the shadow model server,
the flows process and the training runs it starts lower theirs so landing and serving go first
on a small machine."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def lower_cpu_priority(by: int, idle: bool = False) -> None:
    """Lower the whole process's CPU priority by `by` (Unix nice) and, with `idle`, put it under
    SCHED_IDLE (Linux): it then runs only on cores no other task wants, and a waking task of
    the normal policy takes the core back at once, where a niced task keeps it for its time
    slice. On Linux each thread has its own priority and policy and a new thread inherits its
    creator's; imported native libraries may have started threads already, so each running
    thread is changed, then the calling one."""
    idle = idle and hasattr(os, "SCHED_IDLE")
    me = threading.get_native_id()
    tasks = Path("/proc/self/task")
    others = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else []
    for tid in [t for t in others if t != me] + [0]:  # 0: the calling thread
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            if by:
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, now + by))
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
