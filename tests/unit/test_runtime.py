"""How a serving process runs: its CPU priority (a shadow server's is lowered)."""

from __future__ import annotations

import os
import textwrap

import pytest

from tests.support.child import python_json

# In a child process: a lowered priority cannot be raised back without privileges, and the
# test runner must keep its own.
CHILD = textwrap.dedent(
    """
    import json, os, threading
    from mlsd.cpu import lower_cpu_priority

    def nice_of(tid):
        return os.getpriority(os.PRIO_PROCESS, tid)

    def policy_of(tid):
        return os.sched_getscheduler(tid)

    def of_every_thread(what):
        seen = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                seen.add(what(int(tid)))
            except ProcessLookupError:  # a thread that ended since the listing
                pass
        return sorted(seen)

    started = threading.Event()
    release = threading.Event()
    before = {}

    def early():
        before["tid"] = threading.get_native_id()
        started.set()
        release.wait()

    thread = threading.Thread(target=early, daemon=True)  # an error here must not hang
    thread.start()
    started.wait()
    base = nice_of(threading.get_native_id())
    lower_cpu_priority(3, idle=IDLE)
    later = {}
    late = threading.Thread(target=lambda: later.update(nice=nice_of(0), policy=policy_of(0)))
    late.start(); late.join()
    out = {
        "base": base,
        "main": nice_of(threading.get_native_id()),
        "early": nice_of(before["tid"]),
        "late": later["nice"],
        "all": of_every_thread(nice_of),
        "policies": of_every_thread(policy_of),
        "late_policy": later["policy"],
        "idle": os.SCHED_IDLE,
        "normal": os.SCHED_OTHER,
    }
    release.set(); thread.join()
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("idle", [False, True])
def test_lowering_the_priority_reaches_threads_started_before_and_after(idle: bool):
    seen = python_json(f"IDLE = {idle}\n" + CHILD, timeout=60)
    lowered = min(19, seen["base"] + 3)
    assert (seen["main"], seen["early"], seen["late"]) == (lowered, lowered, lowered)
    assert seen["all"] == [lowered]
    policy = seen["idle"] if idle else seen["normal"]
    assert seen["policies"] == [policy] and seen["late_policy"] == policy


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="OpenMP uses one thread anyway on one CPU"
)
@pytest.mark.parametrize("load_scikit_learn", [True, False])
def test_native_thread_pools_are_limited_to_one_thread_openmp_included(load_scikit_learn: bool):
    # In a fresh interpreter without OMP_NUM_THREADS of its own: the limit must reach
    # scikit-learn's OpenMP runtime whether the call loaded it (threadpoolctl limits only what
    # is loaded) or it comes later, in another thread (the fraud server: scikit-learn stays out
    # unless a version's graph is refused).
    child = (
        "import json, sys, threading, threadpoolctl\n"
        "from serving.inference import limit_native_threads\n"
        f"limit_native_threads(load_scikit_learn={load_scikit_learn})\n"
        "loaded_early = 'sklearn' in sys.modules\n"
        "seen = []\n"
        "def later():\n"
        "    import sklearn.ensemble\n"
        "    seen.extend((i['internal_api'], i['num_threads'])"
        " for i in threadpoolctl.threadpool_info())\n"
        "t = threading.Thread(target=later); t.start(); t.join()\n"
        "print(json.dumps({'loaded_early': loaded_early, 'pools': seen}))\n"
    )
    seen = python_json(child, env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert seen["loaded_early"] is load_scikit_learn
    assert "openmp" in {api for api, _ in seen["pools"]}
    assert {n for _, n in seen["pools"]} == {1}
