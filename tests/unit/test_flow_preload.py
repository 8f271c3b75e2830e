"""What the flows process's forkserver preloads (mlsd.flows.FLOW_RUN_PRELOAD) imports, every
module of it, and leaves one thread: Python's forkserver skips a module that fails to import
without a word (the runs would import it again each), and a thread at fork time is what makes
Prefect's engine deadlock in a forked process."""

from __future__ import annotations

import json
import subprocess
import sys

from mlsd.flows import FLOW_RUN_PRELOAD
from tests.support.child import python_json

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
    seen = python_json(PRELOAD_CHECK, FLOW_RUN_PRELOAD, timeout=300)
    assert seen["failed"] == {}
    assert seen["threads"] == ["MainThread"]


# A value of every parameter the lab's deployments and drills pass, as JSON would carry it.
PARAMETERS = {
    "train_fraud": {"as_of": "2026-02-01T00:00:00", "flip_flag": "is_new_device", "seed": 11},
    "train_recsys": {"as_of": "2026-02-01T00:00:00", "seed": 3},
    "land_day": {"world": "fraud", "day": "2026-02-16"},
    "monitor": {"product": "fraud"},
    "rollout": {"product": "fraud", "version": "7", "steps": [25, 50, 100]},
}
BY_VALUE_CHECK = """
import cloudpickle, json, sys
flow = cloudpickle.loads(sys.stdin.buffer.read())
print(json.dumps(flow.validate_parameters(json.loads(sys.argv[1])), default=str))
"""


def test_every_lab_flow_validates_its_parameters_when_it_reaches_its_run_by_value():
    """A run started in memory gets its flow by value (cloudpickle), with only the globals the
    function's body names: parameter annotations left as names (`from __future__ import
    annotations`) cannot be resolved there, and the run fails before it starts."""
    import cloudpickle

    from mlsd.flows import lab_flows

    flows = lab_flows()
    assert set(PARAMETERS) == set(flows)
    for name, flow in flows.items():
        params = PARAMETERS[name]
        done = subprocess.run(
            [sys.executable, "-c", BY_VALUE_CHECK, json.dumps(params)],
            input=cloudpickle.dumps(flow),
            capture_output=True,
            timeout=300,
        )
        assert done.returncode == 0, (name, done.stderr.decode()[-600:])
        validated = json.loads(done.stdout.decode().strip().splitlines()[-1])
        assert set(params) <= set(validated), (name, validated)
