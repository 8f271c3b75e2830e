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
    from pipeline.deployments import deployments

    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    # The real training deployments, with their event triggers, registered on the server (no
    # worker runs them: a created flow run is what this test counts).
    for deployment in deployments():
        deployment.apply()
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
