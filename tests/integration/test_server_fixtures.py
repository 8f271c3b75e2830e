"""The shared server fixtures work: a real registry round trip on MLflow, a flow run on Prefect."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_mlflow_server_logs_a_run_registers_a_version_and_sets_an_alias(mlflow_server, tmp_path):
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_server
    name = f"fixture-check-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, y)

    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.log_param("C", model.C)
        mlflow.log_metric("train_accuracy", float(model.score(x, y)))
        # Explicit requirements: inferring them costs ~7 s (shared/STACK.md).
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )

    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["train_accuracy"] > 0.9
    version = info.registered_model_version
    client.set_registered_model_alias(name, "champion", version)
    assert client.get_model_version_by_alias(name, "champion").version == str(version)
    # The artifact went through the server's proxy and comes back by alias.
    loaded = mlflow.sklearn.load_model(f"models:/{name}@champion", dst_path=str(tmp_path))
    assert (loaded.predict(x) == model.predict(x)).all()


def test_mlflow_server_is_one_process_the_supervisor_started(mlflow_server):
    """The web server took the CLI's place (mlsd.stack.mlflow_server): the process that
    listens is the supervisor's own child, not a child of a waiting `mlflow server`."""
    from urllib.parse import urlparse

    import psutil

    port = urlparse(mlflow_server).port
    listening = [
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert len(listening) == 1, listening
    server = psutil.Process(listening[0])
    assert "uvicorn" in server.cmdline()
    assert server.ppid() == os.getpid()
    assert server.children() == []


def test_prefect_api_records_a_flow_run(prefect_api):
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    assert os.environ["PREFECT_API_URL"] == prefect_api

    @task
    def double(n: int) -> int:
        return 2 * n

    @flow(name="fixture-check")
    def doubled(n: int) -> int:
        return double(n)

    state = doubled(21, return_state=True)
    assert state.is_completed() and state.result() == 42
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    # This very run, as the API recorded it: completed, and a run of this flow.
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        flow_name = client.read_flow(run.flow_id).name
    assert run.id == run_id
    assert run.state is not None and run.state.is_completed()
    assert flow_name == "fixture-check"
