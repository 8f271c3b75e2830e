"""A flow run whose process died no longer holds its deployment's concurrency slot, on a real
Prefect server: found live, a monitor run killed by `mlsd down` kept every later fraud window
waiting for that slot. A run that dies while the runner serves is crashed by Prefect's runner
(the lab relies on it: it has no heartbeat automation any more, mlsd.flows); runs a dead flows
process left behind are crashed when it starts again (mlsd.flows.crash_orphaned_runs)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from prefect import flow

pytestmark = pytest.mark.integration


def _slots_taken(client, deployment_id) -> int:
    return client.read_global_concurrency_limit_by_name(f"deployment:{deployment_id}").active_slots


def _lab_run_holding_its_slot(client, flow, deployment: str, run: str):
    """A run of a new lab deployment limited to one run at a time, set Pending then Running
    through Prefect's orchestration, which gives it the slot (as the runner does); its ids."""
    from prefect.states import Pending, Running

    from mlsd.events import LAB_TAG

    deployment_id = flow.to_deployment(name=deployment, concurrency_limit=1, tags=[LAB_TAG]).apply()
    flow_run = client.create_flow_run_from_deployment(deployment_id, name=run)
    client.set_flow_run_state(flow_run.id, Pending())
    client.set_flow_run_state(flow_run.id, Running())
    assert _slots_taken(client, deployment_id) == 1
    return deployment_id, flow_run


def _state_after(client, run_id, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        state = client.read_flow_run(run_id).state
        if (state is not None and state.type.value == "CRASHED") or time.monotonic() > deadline:
            return state.type.value if state else "NONE"
        time.sleep(1.0)


@flow(name="dies-probe")
def dies_probe() -> None:
    """A run whose process is killed (an OOM kill, say): no final state of its own."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_run_whose_process_dies_is_crashed_by_the_runner_and_frees_its_slot(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    from mlsd.events import LAB_TAG

    # Prefect's runner starts the run from the flow in memory, in a process of its own, with the
    # slot of a limit of one run; the lab's flows process uses this runner, its runs forked from
    # a preloaded server (mlsd.flows.serve_in_memory), and the crash is the runner's own.
    runner = Runner(limit=None, prefetch_seconds=0)
    deployment_id = runner.add_flow(dies_probe, name="dies", concurrency_limit=1, tags=[LAB_TAG])
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, name="killed")
        asyncio.run(runner.start(run_once=True))
        assert _state_after(client, run.id, 60) == "CRASHED"
        assert "status code: -9" in (client.read_flow_run(run.id).state.message or "")  # SIGKILL
        assert _slots_taken(client, deployment_id) == 0  # the next run may start


def test_the_heartbeat_automation_of_an_earlier_lab_is_deleted(prefect_api):
    from prefect.automations import Automation
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import EventTrigger

    from mlsd.flows import RETIRED_ZOMBIE_AUTOMATION, delete_retired_automation

    assert delete_retired_automation() is False  # none to delete in a lab that never had it
    Automation(
        name=RETIRED_ZOMBIE_AUTOMATION,
        trigger=EventTrigger(expect={"prefect.flow-run.heartbeat"}),
        actions=[DoNothing()],
    ).create()
    assert delete_retired_automation() is True
    with pytest.raises(ValueError):  # Prefect's answer for no automation of that name
        Automation.read(name=RETIRED_ZOMBIE_AUTOMATION)


def test_runs_a_dead_flows_process_left_behind_are_crashed_when_it_starts_again(prefect_api):
    """Runs a flows process left Pending or Running when it died: the next one crashes them
    (and frees their slots) before serving."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    from mlsd.events import LAB_TAG
    from mlsd.flows import ORPHAN_MESSAGE, crash_orphaned_runs

    @flow(name="orphan-probe")
    def probe() -> None:  # only its name is used: the runs are created by hand
        return None

    with get_client(sync_client=True) as client:
        lab_id = probe.to_deployment(name="lab", concurrency_limit=1, tags=[LAB_TAG]).apply()
        other_id = probe.to_deployment(name="not-lab", concurrency_limit=1).apply()
        pending = client.create_flow_run_from_deployment(lab_id, name="orphan-pending")
        client.set_flow_run_state(pending.id, Pending())
        assert _slots_taken(client, lab_id) == 1
        # Running when the flows process died with it.
        running_id, running = _lab_run_holding_its_slot(
            client, probe, "lab-running", "orphan-running"
        )
        foreign = client.create_flow_run_from_deployment(other_id, name="not-ours")
        client.set_flow_run_state(foreign.id, Pending())
        # An in-process run (`mlsd train`): tagged, but of no deployment, and alive elsewhere.
        in_process = client.create_flow_run(probe, name="in-process", tags=[LAB_TAG])
        client.set_flow_run_state(in_process.id, Running(), force=True)

        assert {"orphan-pending", "orphan-running"} <= set(crash_orphaned_runs())

        for run, deployment_id in ((pending, lab_id), (running, running_id)):
            state = client.read_flow_run(run.id).state
            assert state.type.value == "CRASHED" and state.message == ORPHAN_MESSAGE
            # The next run of the deployment may start.
            assert _slots_taken(client, deployment_id) == 0
        assert client.read_flow_run(foreign.id).state.type.value == "PENDING"
        assert client.read_flow_run(in_process.id).state.type.value == "RUNNING"
        assert not {"orphan-pending", "orphan-running"} & set(crash_orphaned_runs())
