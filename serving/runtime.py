"""How a serving process runs: its event loop, its garbage collector and its CPU priority.

Both matter for tail latency more than any handler does (measured on the router at 200
req/s, 2 cores): with the default collector, a full collection walked the whole heap that
Feast, MLflow, pandas and KServe leave after start-up, 30 to 260 ms each, every few seconds,
and every request waiting behind one came back late. After `freeze_heap` no collection took
over 1 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def freeze_heap() -> int:
    """Collect once, then move every object alive now out of the collector's sight
    (`gc.freeze`): models, feature-store registries and imported modules live for the life of
    the process, and later collections only walk what requests create. Call it when start-up
    (or loading another model version) is done; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("heap frozen: %d long-lived objects out of the collector's way", frozen)
    return frozen


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (a locked dependency; the same loop uvicorn picks on its
    own), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock file
        return asyncio.new_event_loop
    return uvloop.new_event_loop


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
