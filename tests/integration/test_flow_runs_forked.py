"""The lab's flow runs start from a forkserver that imported their libraries once
(mlsd.flows.fork_flow_runs_from_a_preloaded_server), not as fresh interpreters that import them
again: a run, started by Prefect's own engine against a real Prefect server, is a child of that
server and finds the preloaded modules already in memory."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import psutil
import pytest
from prefect import flow

pytestmark = pytest.mark.integration

MARKER = "tests.support.preload_marker"


@flow(name="where_does_this_run_start")
def where_does_this_run_start(out: str) -> None:
    marker = sys.modules.get(MARKER)
    Path(out).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "parent": os.getppid(),
                "parent_cmdline": " ".join(psutil.Process(os.getppid()).cmdline()),
                "marker_imported_by": getattr(marker, "IMPORTED_BY", None),
                "frozen_objects": gc.get_freeze_count(),
            }
        )
    )


def test_a_flow_run_is_forked_from_the_preloaded_server(prefect_api, tmp_path):
    from prefect.flow_engine import run_flow_in_subprocess

    from mlsd.flows import fork_flow_runs_from_a_preloaded_server

    out = tmp_path / "where.json"
    undo = fork_flow_runs_from_a_preloaded_server(("prefect.flow_engine", MARKER, __name__))
    try:
        run = run_flow_in_subprocess(where_does_this_run_start, parameters={"out": str(out)})
        run.join(180)
        assert run.exitcode == 0
    finally:
        undo()
    seen = json.loads(out.read_text())
    assert seen["pid"] != os.getpid()
    # Its parent is the forkserver (not this process), and the marker was imported there, before
    # the run: the run inherited it instead of importing it.
    assert seen["parent"] != os.getpid() and "forkserver" in seen["parent_cmdline"]
    assert seen["marker_imported_by"] == seen["parent"]
    assert MARKER not in sys.modules  # this process never imported it
    # What the server imported is frozen before the fork (mlsd.preload_frozen), so the run's
    # collections leave those pages shared.
    assert seen["frozen_objects"] > 10_000
