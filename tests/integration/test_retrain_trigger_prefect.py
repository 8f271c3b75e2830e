"""The retrain trigger against a real Prefect server: ten simultaneous drift signals start
exactly one retrain flow run (the policy's lock and cooldown first, the training deployment's
event trigger and concurrency limit second), and the nine others are suppressed out loud."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from mlsd import events
from monitoring.retrain import apply_trigger
from monitoring.trigger import TriggerPolicy
from monitoring.verdict import WindowVerdict

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def lab_deployments(prefect_api):
    """Every deployment the lab's flows process serves, applied before any event is sent, as
    the stack does at start. (An automation created between events was seen to miss the next
    one on the test harness's SQLite server: its trigger cache updates after the commit.)"""
    from mlsd.flows import lab_deployments

    for deployment in lab_deployments():
        deployment.apply()


def drifted_history(now: float) -> list[WindowVerdict]:
    return [
        WindowVerdict(
            window_id=f"fraud-w{i}",
            product="fraud",
            model_version="1",
            start=now - 300 + 100 * i,
            end=now - 200 + 100 * i,
            rows=5000,
            status="judged",
            drifted_share=0.7,
            score_psi=0.4,
        )
        for i in range(3)
    ]


def training_runs(model: str, since: dt.datetime) -> list:
    """Runs of the model's training *deployment* expected to start since the test began: the
    flows other tests ran on the session's Prefect server (the trained lab, the training flow
    tests) are not retrains."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    from pipeline.deployments import DEPLOYMENT_NAMES

    deployment_name = DEPLOYMENT_NAMES[model].split("/")[1]
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            ),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
        )


def test_ten_simultaneous_drift_signals_start_exactly_one_retrain(prefect_api, tmp_path):
    from mlsd.timeline import read_timeline

    # The real training deployments, with their event triggers, are on the server (no worker
    # runs them: a created flow run is what this test counts).
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    policy = TriggerPolicy(m=2, n=3, min_rows=500, cooldown_seconds=600)
    now = time.time()
    history = drifted_history(now)
    decisions = []
    barrier = threading.Barrier(10)

    def signal() -> None:
        barrier.wait()
        decisions.append(apply_trigger(tmp_path, "fraud", history, policy, now=now))

    threads = [threading.Thread(target=signal) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d.action for d in decisions) == ["retrain"] + ["suppress"] * 9
    # Suppressed by the cooldown, or (once Prefect created the run) by the retrain running.
    assert all(
        "cooldown" in d.reason or "already running" in d.reason
        for d in decisions
        if d.action == "suppress"
    )

    # Prefect's automation turns the one request into one flow run of the training deployment.
    deadline = time.monotonic() + 90
    while not training_runs("fraud", started) and time.monotonic() < deadline:
        time.sleep(1)
    runs = training_runs("fraud", started)
    assert len(runs) == 1, f"expected one retrain flow run, found {len(runs)}"
    # And no second one follows: the other nine signals were suppressed before Prefect.
    time.sleep(5)
    assert len(training_runs("fraud", started)) == 1
    assert training_runs("recsys", started) == []

    seen = read_timeline(started, flow_runs=False)
    names = [e.name for e in seen if e.resource == "mlsd.model.fraud"]
    assert names.count(events.RETRAIN_REQUESTED) == 1
    assert names.count(events.RETRAIN_SUPPRESSED) == 9


def test_a_registered_challenger_starts_one_rollout_of_its_version(prefect_api):
    """The gate's announcement (the registry's version is a string) reaches the rollout
    deployment as a run whose parameters its flow accepts: the product and an int version."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from pipeline.tracking import announce

    announce(
        "fraud",
        {"version": "7", "decision": "challenger", "reasons": ["better"], "metrics": {}},
    )

    def rollouts() -> list:
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["rollout"]))
            )

    deadline = time.monotonic() + 90
    while not rollouts() and time.monotonic() < deadline:
        time.sleep(1)
    runs = rollouts()
    assert len(runs) == 1, "the challenger's event started no rollout (see the server's log)"
    assert runs[0].parameters["product"] == "fraud"
    assert runs[0].parameters["version"] == 7


def test_the_monitor_deployments_schedule_runs_on_their_interval(prefect_api):
    """Prefect's scheduler inserts the interval's runs (the same insert its scheduler service
    runs; SQLAlchemy 2.1 broke it, and then no monitor ever ran on its own)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from monitoring.deployments import DEPLOYMENT_NAMES

    with get_client(sync_client=True) as client:
        for name in DEPLOYMENT_NAMES.values():
            deployment_id = client.read_deployment_by_name(name).id
            response = client._client.post(
                f"/deployments/{deployment_id}/schedule", json={"min_runs": 3, "max_runs": 3}
            )
            assert response.status_code < 300, response.text
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["monitor-fraud"]))
        )
    assert len(runs) == 3
    assert {r.state_name for r in runs} <= {"Scheduled", "Late"}
    assert {r.parameters["product"] for r in runs} == {"fraud"}


def test_the_timeline_leaves_out_a_flow_runs_bookkeeping(prefect_api):
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from mlsd.timeline import read_timeline

    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    run = {"prefect.resource.id": "prefect.flow-run.00000000-0000-0000-0000-000000000001"}
    for name in (
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Pending",
        "prefect.flow-run.Running",
    ):
        emit_event(event=name, resource=run)
    EventsWorker.drain_all()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = [e.name for e in read_timeline(started, flow_runs=True)]
        if "prefect.flow-run.Running" in names:
            break
        time.sleep(0.5)
    assert "prefect.flow-run.Running" in names
    assert not {"prefect.flow-run.heartbeat", "prefect.flow-run.Pending"} & set(names)


def test_a_monitor_run_that_comes_while_one_runs_is_cancelled_not_queued(prefect_api):
    """The monitor deployments cancel a colliding run: queued, runs piled up behind a slow one,
    and a lab started again after a stop found every run created ahead due at once."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Pending

    from monitoring.deployments import DEPLOYMENT_NAMES

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT_NAMES["recsys"])
        running = client.create_flow_run_from_deployment(deployment.id)
        late = client.create_flow_run_from_deployment(deployment.id)
        try:
            assert client.set_flow_run_state(running.id, Pending()).state.type.value == "PENDING"
            client.set_flow_run_state(late.id, Pending())
            assert client.read_flow_run(late.id).state.type.value == "CANCELLED"
        finally:
            client.set_flow_run_state(running.id, Cancelled(), force=True)
        after = client.create_flow_run_from_deployment(deployment.id)
        try:  # the slot is free again once the running one ends
            assert client.set_flow_run_state(after.id, Pending()).state.type.value == "PENDING"
        finally:
            client.set_flow_run_state(after.id, Cancelled(), force=True)
