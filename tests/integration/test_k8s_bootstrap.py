"""The cluster's bootstrap registers the Kubernetes work pool from the committed job template and
every lab deployment in it, against a real Prefect API; a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.k8s_bootstrap import bootstrap_module

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra/k8s/base/prefect-base-job-template.json"


def test_the_work_pool_and_every_lab_deployment_are_registered_once(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from mlsd.flows import lab_deployments

    monkeypatch.setenv("MLSD_K8S_WORK_POOL_TEMPLATE", str(TEMPLATE))
    bootstrap = bootstrap_module()
    bootstrap.ensure_flows()
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(bootstrap.WORK_POOL)
        first = {d.id: d.updated for d in client.read_deployments()}
    bootstrap.ensure_flows()  # idempotent: the same pool, the same deployments
    with get_client(sync_client=True) as client:
        again = client.read_work_pool(bootstrap.WORK_POOL)
        deployments = client.read_deployments()
    assert pool.type == "kubernetes"
    assert pool.base_job_template == json.loads(TEMPLATE.read_text())
    assert again.id == pool.id
    assert {d.id for d in deployments} == set(first)
    in_pool = {d.name for d in deployments if d.work_pool_name == bootstrap.WORK_POOL}
    assert in_pool == {d.name for d in lab_deployments()}
