"""What the flows process's forkserver preloads (mlsd.flows.FLOW_RUN_PRELOAD) imports, every
module of it, and leaves one thread: Python's forkserver skips a module that fails to import
without a word (the runs would import it again each), and a thread at fork time is what makes
Prefect's engine deadlock in a forked process."""

from __future__ import annotations

import json
import subprocess
import sys

from mlsd.flows import FLOW_RUN_PRELOAD

PRELOAD_CHECK = """
import importlib, json, sys, threading
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as err:
        failed[name] = repr(err)
print(json.dumps({"failed": failed, "threads": [t.name for t in threading.enumerate()]}))
"""


def test_the_flow_run_preload_imports_and_starts_no_thread():
    done = subprocess.run(
        [sys.executable, "-c", PRELOAD_CHECK, *FLOW_RUN_PRELOAD],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["failed"] == {}
    assert seen["threads"] == ["MainThread"]
