"""How a serving process runs: its event loop and its garbage collector (its CPU priority:
`mlsd.cpu`).

Both matter for tail latency more than any handler does (measured on the router at 200
req/s, 2 cores): with the default collector, a full collection walked the whole heap that
Feast, MLflow, pandas and KServe leave after start-up, 30 to 260 ms each, every few seconds,
and every request waiting behind one came back late. After `freeze_heap` no collection took
over 1 ms.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

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
