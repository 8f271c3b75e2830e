"""A flow run whose process died is marked Crashed by the lab's automation (mlsd.flows), on a
real Prefect server, so it no longer holds its deployment's concurrency slot: found live, a
monitor run killed by `mlsd down` kept every later fraud window waiting for that slot."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def _heartbeat(run_id, run) -> None:
    """A heartbeat as Prefect's engine sends it: the run, related to its deployment and tags."""
    from prefect.events import emit_event

    related = [
        {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
        for tag in run.tags
    ]
    if run.deployment_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                "prefect.resource.role": "deployment",
            }
        )
    emit_event(
        event="prefect.flow-run.heartbeat",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        related=related,
    )


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


def test_a_run_that_stops_sending_heartbeats_is_crashed_a_live_one_is_not(prefect_api):
    from prefect import flow
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from mlsd.flows import ZOMBIE_AUTOMATION, ensure_zombie_automation

    @flow(name="zombie-probe")
    def probe() -> None:  # only its name is used: the runs are created by hand
        return None

    ensure_zombie_automation(heartbeat_seconds=30)
    ensure_zombie_automation(heartbeat_seconds=4)  # brought to the new beat, not duplicated
    try:
        with get_client(sync_client=True) as client:
            named = [a for a in client.read_automations() if a.name == ZOMBIE_AUTOMATION]
            assert len(named) == 1
            assert named[0].trigger.within.total_seconds() == 12  # 3 heartbeats of 4 s
            time.sleep(3)  # the server's trigger cache picks the automation up after its commit
            # The zombie holds the slot of a deployment limited to one run at a time, as the
            # monitor's did.
            deployment_id, zombie = _lab_run_holding_its_slot(client, probe, "probe", "zombie")
            finished = client.create_flow_run_from_deployment(deployment_id, name="finished")
            client.set_flow_run_state(finished.id, Running(), force=True)
            # A run of no lab deployment (an in-process `mlsd train`) beats every 180 s, not
            # this automation's concern: it must never be crashed by it.
            elsewhere = client.create_flow_run(probe, name="in-process", state=Running())
            for run in (zombie, finished, elsewhere):
                _heartbeat(run.id, client.read_flow_run(run.id))
            client.set_flow_run_state(finished.id, Completed(), force=True)
            # The zombie never beats again: after 12 s of silence the automation crashes it.
            assert _state_after(client, zombie.id, 60) == "CRASHED"
            crashed = client.read_flow_run(zombie.id).state
            assert "no heartbeat for 12 s" in (crashed.message or "")
            # Crashed by orchestration, not forced past it: the slot is free for the next run.
            assert _slots_taken(client, deployment_id) == 0
            # The run that reached a final state within its window is left as it ended.
            assert client.read_flow_run(finished.id).state.type.value == "COMPLETED"
            # Its heartbeat went out with the zombie's: were it watched, it would crash now.
            assert _state_after(client, elsewhere.id, 8) == "RUNNING"
    finally:
        Automation.read(name=ZOMBIE_AUTOMATION).delete()


def test_runs_a_dead_flows_process_left_behind_are_crashed_when_it_starts_again(prefect_api):
    """A run the runner set Pending just before it died never beat, so no automation sees it;
    the next flows process crashes it (and frees its slot) before serving."""
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
        # Killed within its first heartbeat: Running, and silent.
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
