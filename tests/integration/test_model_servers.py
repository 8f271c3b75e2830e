"""The KServe model servers for real: registered versions from MLflow, features from the online
store, V1 and V2 answers, and a second version loaded beside the first while it serves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from mlsd.netutil import free_port
from mlsd.stack import Supervisor
from mlsd.stack.component import Component
from models.fraud_onnx import probability_tolerance
from tests.integration.lab import Lab

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int
    product: str


def start_model_server(lab: Lab, product: str, versions: list[str]) -> tuple[Supervisor, str]:
    """Start `python -m serving.model_server` as the stack would; (supervisor, its name)."""
    from serving.launch import model_server_argv

    port = free_port()
    name = f"test-{product}-server"
    argv = model_server_argv(product, lab.settings, versions)  # type: ignore[arg-type]
    argv[argv.index("--http-port") + 1] = str(port)
    component = Component(
        name=name,
        argv=tuple(argv),
        env=lab.env,
        log_file=lab.settings.logs_dir.resolve() / f"{name}.log",
        host="127.0.0.1",
        port=port,
        health_url=f"http://127.0.0.1:{port}/v2/models/{product}-v{versions[0]}/ready",
        health_timeout_seconds=120,
    )
    supervisor = Supervisor.from_settings(lab.settings)
    supervisor.start([component])
    return supervisor, name


@pytest.fixture(scope="module")
def fraud_server(trained_lab: Lab) -> Iterator[RunningServer]:
    supervisor, name = start_model_server(trained_lab, "fraud", [trained_lab.fraud_versions[0]])
    record = supervisor.record(name)
    assert record is not None and record.component.port is not None
    try:
        yield RunningServer(f"http://127.0.0.1:{record.component.port}", record.pid, "fraud")
    finally:
        supervisor.stop([name])


@pytest.fixture(scope="module")
def recsys_server(trained_lab: Lab) -> Iterator[RunningServer]:
    supervisor, name = start_model_server(trained_lab, "recsys", [trained_lab.recsys_versions[0]])
    record = supervisor.record(name)
    assert record is not None and record.component.port is not None
    try:
        yield RunningServer(f"http://127.0.0.1:{record.component.port}", record.pid, "recsys")
    finally:
        supervisor.stop([name])


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # No proxy from the environment between a test and a loopback server.
    with httpx.Client(trust_env=False, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def transaction(trained_lab: Lab) -> dict[str, Any]:
    """The latest transaction of the lab's world: its card and merchant are in the store."""
    tx = pd.read_parquet(trained_lab.settings.offline_dir / "fraud" / "transactions")
    row = tx.sort_values("event_timestamp").iloc[-1]
    return {
        "card_id": str(row["card_id"]),
        "merchant_id": str(row["merchant_id"]),
        "amount": float(row["amount"]),
        "country": str(row["country"]),
        "device_id": str(row["device_id"]),
        "event_timestamp": row["event_timestamp"].timestamp() + 1.0,
    }


def v2_body(row: dict[str, Any]) -> dict[str, Any]:
    """A V2 request written by hand, as the contract spells it."""
    datatype = {str: "BYTES", float: "FP64", int: "INT64"}
    return {
        "inputs": [
            {"name": k, "shape": [1], "datatype": datatype[type(v)], "data": [v]}
            for k, v in row.items()
        ]
    }


def outputs(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {o["name"]: o["data"] for o in body["outputs"]}


# --- fraud ----------------------------------------------------------------------------------


def test_fraud_server_listens_on_loopback_only(fraud_server: RunningServer):
    listening = [
        c.laddr
        for p in [psutil.Process(fraud_server.pid), *psutil.Process(fraud_server.pid).children()]
        # psutil < 6 calls it `connections`.
        for c in getattr(p, "net_connections", p.connections)(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the model server listens nowhere"
    assert {a.ip for a in listening} == {"127.0.0.1"}, listening


def test_fraud_v1_says_which_version_and_features_answered(
    trained_lab: Lab, fraud_server: RunningServer, http: httpx.Client, transaction: dict
):
    version = trained_lab.fraud_versions[0]
    response = http.post(
        f"{fraud_server.url}/v1/models/fraud-v{version}:predict",
        json={"instances": [transaction, {**transaction, "amount": 5_000.0}]},
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    tags = trained_lab_tags(trained_lab, version)
    for p in predictions:
        assert p["model_version"] == f"fraud/{version}"
        assert 0.0 <= p["score"] <= 1.0
        assert p["decision"] == ("block" if p["score"] >= float(tags["threshold"]) else "allow")
        assert p["card_unknown"] == 0
        assert set(tags["features"].split(",")) <= set(p["features"])
        assert p["features"]["card_unknown"] == 0
    # The large amount is far above the card's mean: its rule fires.
    assert "amount_over_card_mean" in predictions[1]["reasons"].split(",")
    # The server scores with the version's ONNX graph: the registered scikit-learn model gives
    # the same probability for the features the server reports it used, within what float32
    # trees allow (models.fraud_onnx.probability_tolerance).
    estimator = registered_estimator(trained_lab, version)
    names = tags["features"].split(",")
    matrix = np.array(
        [
            [np.nan if p["features"][n] is None else p["features"][n] for n in names]
            for p in predictions
        ],
        dtype=np.float64,
    )
    expected = estimator.predict_proba(matrix)[:, 1]
    tolerance = probability_tolerance(estimator)
    assert [p["score"] for p in predictions] == pytest.approx(expected.tolist(), abs=tolerance)


def registered_estimator(lab: Lab, version: str) -> Any:
    """The scikit-learn model as registered (the estimator itself, not the server's copy)."""
    from mlsd.registry import ModelRegistry

    return ModelRegistry(lab.tracking_uri).load_sklearn(lab.fraud_model_name, version)


@pytest.mark.parametrize("isolated", [True, False], ids=["in-a-child", "in-process"])
def test_versions_load_from_the_registry_they_are_given(
    trained_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: bool
):
    """MLflow's default registry points at an empty one (in the environment a loader's child
    inherits, and in this process): the loaders must still fetch from the lab's, and leave no
    mlflow.db behind in the working directory."""
    import mlflow

    from serving.inference import load_fraud_version, load_recsys_version

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", elsewhere)
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(elsewhere)
    try:
        fraud = load_fraud_version(
            trained_lab.settings, trained_lab.fraud_versions[0], trained_lab.tracking_uri, isolated
        )
        recsys = load_recsys_version(
            trained_lab.settings,
            trained_lab.recsys_versions[0],
            trained_lab.tracking_uri,
            isolated,
        )
    finally:
        mlflow.set_tracking_uri(before)
    assert fraud.version == trained_lab.fraud_versions[0] and fraud.compiled is not None
    assert recsys.version == trained_lab.recsys_versions[0] and recsys.user_index
    assert not (tmp_path / "mlflow.db").exists()


def trained_lab_tags(lab: Lab, version: str) -> dict[str, str]:
    from mlsd.registry import ModelRegistry

    return ModelRegistry(lab.tracking_uri).version_tags(lab.fraud_model_name, version)


def test_fraud_v2_answers_a_kserve_client(
    trained_lab: Lab, fraud_server: RunningServer, transaction: dict
):
    import asyncio

    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    version = trained_lab.fraud_versions[0]
    inputs = []
    for name, value in transaction.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        tensor = InferInput(name=name, shape=[1], datatype=datatype)
        tensor.set_data_from_numpy(
            np.array([value], dtype=object if datatype == "BYTES" else np.float64),
            binary_data=False,
        )
        inputs.append(tensor)

    async def call() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            return await client.infer(
                fraud_server.url, InferRequest(f"fraud-v{version}", inputs), f"fraud-v{version}"
            )
        finally:
            await client.close()

    response = asyncio.run(call())
    got = {o.name: o.data for o in response.outputs}
    assert set(got) == {"score", "decision", "reasons", "model_version", "card_unknown", "features"}
    assert got["model_version"] == [f"fraud/{version}"]
    # The features it scored, as the router logs them for monitoring: every input the version
    # was trained on (its `features` tag), each a number.
    scored = json.loads(got["features"][0])
    trained_on = trained_lab_tags(trained_lab, version)["features"].split(",")
    assert set(trained_on) <= set(scored), set(trained_on) - set(scored)
    assert all(isinstance(scored[name], int | float) for name in trained_on), scored
    assert scored["card_unknown"] == 0
    # (KServe's client drops the response's top-level model_version; the output carries it.)
    assert 0.0 <= got["score"][0] <= 1.0
    assert got["decision"][0] in ("block", "allow")
    assert got["card_unknown"] == [0]


def test_fraud_v2_metadata_names_the_features(
    trained_lab: Lab, fraud_server: RunningServer, http: httpx.Client
):
    version = trained_lab.fraud_versions[0]
    body = http.get(f"{fraud_server.url}/v2/models/fraud-v{version}").json()
    tags = trained_lab_tags(trained_lab, version)
    assert body["versions"] == [version]
    assert body["parameters"]["features"] == tags["features"]
    assert body["parameters"]["model_version"] == f"fraud/{version}"
    assert body["parameters"]["threshold"] == pytest.approx(float(tags["threshold"]))
    assert body["parameters"]["scoring"].startswith("onnxruntime")
    assert [i["name"] for i in body["inputs"]][:5] == [
        "card_id",
        "merchant_id",
        "amount",
        "country",
        "device_id",
    ]
    assert http.get(f"{fraud_server.url}/v2/models/fraud-v999").status_code == 404


def test_unknown_card_gets_a_score_and_the_cold_start_marker(
    trained_lab: Lab, fraud_server: RunningServer, http: httpx.Client, transaction: dict
):
    version = trained_lab.fraud_versions[0]
    stranger = {**transaction, "card_id": "card_never_seen", "merchant_id": "merchant_never_seen"}
    response = http.post(
        f"{fraud_server.url}/v2/models/fraud-v{version}/infer", json=v2_body(stranger)
    )
    assert response.status_code == 200, response.text
    got = outputs(response.json())
    assert got["card_unknown"] == [1]
    assert 0.0 <= got["score"][0] <= 1.0
    assert got["decision"][0] in ("block", "allow")
    # A card with no history is on a device it has never used.
    assert "is_new_device" in got["reasons"][0].split(",")


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda b: b["inputs"].pop(2), "amount"),  # missing input
        (lambda b: b["inputs"][2].update(datatype="BYTES", data=["lots"]), "amount"),
        (lambda b: b["inputs"][0].update(shape=[2], data=["a", "b"]), "card_id"),
        (lambda b: b["inputs"][0].update(datatype="INT64", data=[7]), "card_id"),
        (lambda b: b["inputs"][2].pop("datatype"), "datatype"),
    ],
    ids=["missing", "wrong-datatype", "batch-mismatch", "number-for-string", "no-datatype"],
)
def test_malformed_v2_input_is_a_4xx_naming_the_input(
    trained_lab: Lab,
    fraud_server: RunningServer,
    http: httpx.Client,
    transaction: dict,
    mutate: Any,
    named: str,
):
    body = v2_body(transaction)
    mutate(body)
    version = trained_lab.fraud_versions[0]
    response = http.post(f"{fraud_server.url}/v2/models/fraud-v{version}/infer", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert named in response.text


def test_malformed_v1_input_is_a_4xx_naming_the_input(
    trained_lab: Lab, fraud_server: RunningServer, http: httpx.Client, transaction: dict
):
    version = trained_lab.fraud_versions[0]
    url = f"{fraud_server.url}/v1/models/fraud-v{version}:predict"
    missing = {k: v for k, v in transaction.items() if k != "device_id"}
    response = http.post(url, json={"instances": [missing]})
    assert response.status_code == 400 and "device_id" in response.text
    response = http.post(url, json={"rows": [transaction]})
    assert response.status_code == 400 and "instances" in response.text


def test_a_second_version_loads_beside_the_first_while_it_answers(
    trained_lab: Lab, fraud_server: RunningServer, http: httpx.Client, transaction: dict
):
    first, second = trained_lab.fraud_versions
    url = fraud_server.url
    statuses: list[int] = []
    stop = threading.Event()

    def keep_scoring() -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/v2/models/fraud-v{first}/infer", json=v2_body(transaction))
                statuses.append(r.status_code)

    scorer = threading.Thread(target=keep_scoring)
    scorer.start()
    try:
        time.sleep(0.3)
        loaded = http.post(f"{url}/v2/repository/models/fraud-v{second}/load")
        time.sleep(0.3)
    finally:
        stop.set()
        scorer.join()
    assert loaded.status_code == 200, loaded.text
    assert len(statuses) > 5 and set(statuses) == {200}, statuses

    names = set(http.get(f"{url}/v2/models").json()["models"])
    assert {f"fraud-v{first}", f"fraud-v{second}"} <= names
    answer = http.post(f"{url}/v2/models/fraud-v{second}/infer", json=v2_body(transaction))
    assert outputs(answer.json())["model_version"] == [f"fraud/{second}"]

    unloaded = http.post(f"{url}/v2/repository/models/fraud-v{second}/unload")
    assert unloaded.status_code == 200, unloaded.text
    gone = http.post(f"{url}/v2/models/fraud-v{second}/infer", json=v2_body(transaction))
    assert gone.status_code == 404
    still = http.post(f"{url}/v2/models/fraud-v{first}/infer", json=v2_body(transaction))
    assert outputs(still.json())["model_version"] == [f"fraud/{first}"]


def test_the_fraud_server_keeps_no_scikit_learn_from_the_versions_it_loaded(
    fraud_server: RunningServer,
):
    """A version loads in a child process that exits (serving.inference.fraud): the server
    scores with the checked ONNX graph and maps none of scikit-learn's libraries."""
    server = psutil.Process(fraud_server.pid)
    mapped = {m.path for m in server.memory_maps()}
    assert [p for p in mapped if "onnxruntime" in p], "no onnxruntime: what scores then?"
    assert not [p for p in mapped if "/sklearn/" in p]
    # The loader has exited; multiprocessing's resource tracker (7 MB) stays, as it does.
    left = [" ".join(c.cmdline()) for c in server.children()]
    assert all("multiprocessing.resource_tracker" in c for c in left), left


def test_loading_what_the_registry_lacks_is_a_4xx(fraud_server: RunningServer, http: httpx.Client):
    assert http.post(f"{fraud_server.url}/v2/repository/models/fraud-v999/load").status_code == 404
    wrong_product = http.post(f"{fraud_server.url}/v2/repository/models/recsys-v1/load")
    assert wrong_product.status_code == 400 and "fraud" in wrong_product.text
    malformed = http.post(f"{fraud_server.url}/v2/repository/models/fraud-latest/load")
    assert malformed.status_code == 400


# --- recsys ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known_user(trained_lab: Lab) -> str:
    """A listener who played in the towers' training window: both the bundle and the store
    have a vector for them."""
    from features.embeddings import read_embeddings

    vectors = read_embeddings(trained_lab.settings, "user")
    return str(vectors["user_id"].iloc[0])


def test_recsys_top_k_for_a_known_user_comes_from_the_model(
    trained_lab: Lab, recsys_server: RunningServer, http: httpx.Client, known_user: str
):
    version = trained_lab.recsys_versions[0]
    body = {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [known_user]},
            {"name": "k", "shape": [1], "datatype": "INT64", "data": [5]},
            {"name": "event_timestamp", "shape": [1], "datatype": "FP64", "data": [time.time()]},
        ]
    }
    response = http.post(f"{recsys_server.url}/v2/models/recsys-v{version}/infer", json=body)
    assert response.status_code == 200, response.text
    got = outputs(response.json())
    items = got["item_ids"][0].split(",")
    scores = [float(s) for s in got["scores"][0].split(",")]
    assert got["path"] == ["model"]
    assert got["model_version"] == [f"recsys/{version}"]
    assert len(items) == len(set(items)) == 5
    assert scores == sorted(scores, reverse=True)

    v1 = http.post(
        f"{recsys_server.url}/v1/models/recsys-v{version}:predict",
        json={"instances": [{"user_id": known_user, "k": 5, "event_timestamp": time.time()}]},
    ).json()["predictions"][0]
    assert v1["item_ids"].split(",") == items
    assert set(v1["features"]) == set(items)
    ranker_features = http.get(f"{recsys_server.url}/v2/models/recsys-v{version}").json()[
        "parameters"
    ]["features"]
    assert set(next(iter(v1["features"].values()))) <= set(ranker_features.split(","))


def test_recsys_unknown_user_gets_the_popularity_list(
    trained_lab: Lab, recsys_server: RunningServer, http: httpx.Client
):
    from serving.inference import load_recsys_version

    version = trained_lab.recsys_versions[0]
    response = http.post(
        f"{recsys_server.url}/v1/models/recsys-v{version}:predict",
        json={"instances": [{"user_id": "user_never_seen", "k": 4}]},
    )
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert answer["path"] == "popularity"
    served = load_recsys_version(trained_lab.settings, version, trained_lab.tracking_uri)
    assert answer["item_ids"].split(",") == served.bundle.popular[:4]


def test_recsys_bad_k_is_a_4xx_naming_k(
    trained_lab: Lab, recsys_server: RunningServer, http: httpx.Client, known_user: str
):
    version = trained_lab.recsys_versions[0]
    response = http.post(
        f"{recsys_server.url}/v1/models/recsys-v{version}:predict",
        json={"instances": [{"user_id": known_user, "k": 0}]},
    )
    assert response.status_code == 400 and "'k'" in response.text


# --- the logic the servers run, called directly ---------------------------------------------


def test_the_store_vector_is_used_only_when_its_version_is_the_served_one(
    trained_lab: Lab, known_user: str
):
    from features.store import online_features
    from serving.inference import load_recsys_version, query_vector

    served = load_recsys_version(
        trained_lab.settings, trained_lab.recsys_versions[0], trained_lab.tracking_uri
    )
    stored = online_features(
        {"user_id": known_user}, None, "recsys_retrieval_user", settings=trained_lab.settings
    )
    assert stored["user_embedding_version"] == served.version
    own = served.bundle.embeddings.users[served.user_index[known_user]]
    from_store = query_vector(served, known_user, trained_lab.settings)
    assert from_store is not None
    np.testing.assert_allclose(from_store, np.asarray(stored["user_vector"], dtype=np.float64))
    np.testing.assert_allclose(from_store, own, rtol=1e-6, atol=1e-6)  # float32 in the store

    other = replace(served, version="999")  # another version: its towers' space, not the store's
    np.testing.assert_array_equal(query_vector(other, known_user, trained_lab.settings), own)
    assert query_vector(served, "user_never_seen", trained_lab.settings) is None
