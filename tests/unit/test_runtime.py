"""How a serving process runs: its CPU priority (a shadow server's is lowered)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# In a child process: a lowered priority cannot be raised back without privileges, and the
# test runner must keep its own.
CHILD = textwrap.dedent(
    """
    import json, os, threading
    from serving.runtime import lower_cpu_priority

    def nice_of(tid):
        return os.getpriority(os.PRIO_PROCESS, tid)

    started = threading.Event()
    release = threading.Event()
    before = {}

    def early():
        before["tid"] = threading.get_native_id()
        started.set()
        release.wait()

    thread = threading.Thread(target=early)
    thread.start()
    started.wait()
    base = nice_of(threading.get_native_id())
    lower_cpu_priority(3)
    later = {}
    late = threading.Thread(target=lambda: later.update(tid=threading.get_native_id(),
                                                        nice=nice_of(threading.get_native_id())))
    late.start(); late.join()
    out = {
        "base": base,
        "main": nice_of(threading.get_native_id()),
        "early": nice_of(before["tid"]),
        "late": later["nice"],
        "all": sorted({nice_of(int(t)) for t in os.listdir("/proc/self/task")}),
    }
    release.set(); thread.join()
    print(json.dumps(out))
    """
)


def test_lowering_the_priority_reaches_threads_started_before_and_after():
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=Path(__file__).resolve().parents[2],  # the repository, for `import serving`
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    lowered = min(19, seen["base"] + 3)
    assert (seen["main"], seen["early"], seen["late"]) == (lowered, lowered, lowered)
    assert seen["all"] == [lowered]
