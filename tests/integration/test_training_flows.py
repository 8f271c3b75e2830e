"""The training flows against a real MLflow server and a real Prefect API: what lands in the
registry, and what the registration gate lets through."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlsd.registry import CHALLENGER, CHAMPION, ModelRegistry

pytestmark = pytest.mark.integration


def test_fraud_versions_carry_metrics_features_and_the_feature_service(trained_lab):
    client = MlflowClient(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    first, second = trained_lab.fraud_versions
    assert int(second) == int(first) + 1
    for version, outcome in zip(
        trained_lab.fraud_versions, trained_lab.outcomes["fraud"], strict=True
    ):
        assert outcome["version"] == version
        mv = client.get_model_version(name, version)
        assert mv.tags["feature_service"] == "fraud_scoring"
        assert "amount_over_card_mean" in mv.tags["features"].split(",")
        assert 0.0 < float(mv.tags["threshold"]) < 1.0
        # The registry records the verdict the flow reported for this very version.
        assert mv.tags["gate.decision"] == outcome["decision"]
        assert mv.tags["gate.reasons"] == " | ".join(outcome["reasons"])
        run = client.get_run(mv.run_id)
        metrics = run.data.metrics
        for key in (
            "pr_auc",
            "roc_auc",
            "recall_at_precision_50",
            "precision_at_100",
            "expected_cost",
            "baseline_logistic_pr_auc",
            "baseline_rules_pr_auc",
        ):
            assert key in metrics, key
        # Above the floor of the gate: far better than guessing at the base rate.
        assert metrics["pr_auc"] > 3 * metrics["positive_rate"]
        assert run.data.params["feature_service"] == "fraud_scoring"
        assert run.data.tags["prefect.flow_run_id"]
        artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
        assert {
            "plots/pr_curve.png",
            "plots/calibration.png",
            "plots/score_histogram.png",
        } <= artifacts


def expected_fraud_decision(
    settings, metrics: dict[str, float], champion_pr_auc: float | None
) -> str:
    """The fraud gate's verdict, restated from its settings (pipeline/registration_gate.py with
    the policy of pipeline/train_fraud.py), for a candidate whose data checks passed: PR-AUC at
    least `min_lift_over_base_rate` times the validation window's positive rate, and then (when
    there is a champion) no more than `gate_margin` below the champion's PR-AUC on that window,
    unless the paired bootstrap interval the run logged reaches the margin (noise)."""
    cfg = settings.training.fraud
    if metrics["pr_auc"] < cfg.min_lift_over_base_rate * metrics["positive_rate"]:
        return "rejected"
    if champion_pr_auc is None:
        return "champion"
    if metrics["pr_auc"] - champion_pr_auc >= -cfg.gate_margin:
        return "challenger"
    return "rejected" if metrics["gate_delta_high"] < -cfg.gate_margin else "challenger"


def data_checks_passed(client: MlflowClient, run_id: str, tmp_path) -> bool:
    path = client.download_artifacts(run_id, "training_set.json", str(tmp_path))
    return bool(json.loads(Path(path).read_text())["checks"]["success"])


def test_first_fraud_version_became_champion_and_the_retrain_was_judged_against_it(
    trained_lab, tmp_path
):
    client = MlflowClient(trained_lab.tracking_uri)
    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    first, second = trained_lab.fraud_versions
    outcomes = trained_lab.outcomes["fraud"]
    assert outcomes[0]["decision"] == "champion"
    history = registry.history(name)
    assert history[0].alias == CHAMPION and history[0].version == first
    # The retrain was compared with the champion on the same validation window, and the
    # registry kept the champion's score there.
    retrain = client.get_model_version(name, second)
    champion_pr_auc = float(retrain.tags[f"gate.champion_v{first}.pr_auc"])
    assert outcomes[1]["champion_metrics"]["pr_auc"] == champion_pr_auc
    # What the gate must have decided, from the metrics MLflow recorded for the retrain.
    assert data_checks_passed(client, retrain.run_id, tmp_path)
    metrics = client.get_run(retrain.run_id).data.metrics
    # The paired interval of the PR-AUC delta the gate read was logged with the run.
    assert metrics["gate_delta_low"] < metrics["gate_delta_high"], metrics
    assert retrain.tags["gate.delta_interval"].startswith("[")
    decision = expected_fraud_decision(trained_lab.settings, metrics, champion_pr_auc)
    assert outcomes[1]["decision"] == decision and outcomes[1]["reasons"], outcomes[1]
    aliases = registry.aliases(name)
    assert aliases[CHAMPION] == first
    if decision == "challenger":
        assert aliases.get(CHALLENGER) == second
    else:
        # Refused: no alias points at it.
        assert second not in aliases.values(), aliases


def test_served_model_loads_with_skops_and_scores(trained_lab, tmp_path):
    from features.store import training_frame
    from pipeline.fraud_training_set import ENTITY_COLUMNS, load_labelled_transactions

    name = trained_lab.fraud_model_name
    uri = f"models:/{name}@{CHAMPION}"
    # Downloaded into the test's own folder: without a destination, MLflow downloads a model
    # (and get_model_info its MLmodel) into a new /tmp folder it never removes (mlflow#12140).
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path))
    info = mlflow.models.Model.load(local)
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    model = mlflow.sklearn.load_model(local)
    features = list(model.feature_names_in_)
    # Real transactions of the lab, frauds among them, with their point-in-time features.
    tx, _ = load_labelled_transactions(trained_lab.settings, None)
    rows = pd.concat(
        [tx[tx["is_fraud"] == 1].tail(10), tx[tx["is_fraud"] == 0].tail(40)]
    ).sort_values("event_timestamp")
    assert rows["is_fraud"].sum() == 10
    frame = training_frame(
        rows[ENTITY_COLUMNS].reset_index(drop=True), "fraud_scoring", settings=trained_lab.settings
    )
    scores = model.predict_proba(frame[features])[:, 1]
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    assert len(set(scores.tolist())) > 1, scores


def test_every_fraud_version_carries_its_onnx_graph_beside_the_model(trained_lab):
    from models.fraud_onnx import ONNX_FILE, check_scorer, load_fraud_model, onnx_session

    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    for version in trained_lab.fraud_versions:
        with registry.downloaded(name, version) as folder:
            # In the version's own files, next to the scikit-learn model it was checked against.
            assert (folder / "MLmodel").exists()
            assert [p.relative_to(folder).as_posix() for p in folder.rglob(ONNX_FILE)] == [
                f"extra_files/{ONNX_FILE}"
            ]
        registered = load_fraud_model(registry, name, version)
        assert registered.graph is not None
        scorer = onnx_session(registered.graph)
        assert scorer.features == tuple(registered.estimator.feature_names_in_)
        assert check_scorer(registered.estimator, scorer) == ""


def test_a_model_trained_on_shuffled_labels_is_refused_and_no_alias_moves(trained_lab, tmp_path):
    from pipeline.train_fraud import train_fraud

    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    before = registry.aliases(name)
    state = train_fraud(
        seed=2, shuffle_labels=True, tracking_uri=trained_lab.tracking_uri, return_state=True
    )
    outcome = state.result()
    champion = before[CHAMPION]
    champion_pr_auc = float(
        registry.version_tags(name, outcome["version"])[f"gate.champion_v{champion}.pr_auc"]
    )
    run_id = registry.client.get_model_version(name, outcome["version"]).run_id
    assert data_checks_passed(registry.client, run_id, tmp_path)
    metrics = registry.client.get_run(run_id).data.metrics
    # Labels that no longer match the rows leave the model no better than guessing at the base
    # rate: below the floor, which the gate checks before comparing with the champion.
    assert metrics["pr_auc"] < (
        trained_lab.settings.training.fraud.min_lift_over_base_rate * metrics["positive_rate"]
    ), metrics
    assert outcome["decision"] == "rejected"
    assert expected_fraud_decision(trained_lab.settings, metrics, champion_pr_auc) == "rejected"
    assert any("below the floor" in reason for reason in outcome["reasons"]), outcome["reasons"]
    assert registry.aliases(name) == before
    # Refused, yet recorded: the version exists with the reason on it.
    tags = registry.version_tags(name, outcome["version"])
    assert tags["gate.decision"] == "rejected"
    # ...and the refusal shows where people look: the flow run's state and the registry's
    # description of the version (it is MLflow's "latest version" all the same).
    assert state.name == "Refused" and state.is_completed()
    assert f"v{outcome['version']}: REFUSED" in (state.message or "")
    description = registry.client.get_model_version(name, outcome["version"]).description
    assert description.startswith(f"{name} v{outcome['version']}: REFUSED by the registration gate")
    assert "below the floor" in description


def test_a_failed_flow_leaves_every_alias_as_it_was(trained_lab):
    from prefect.states import State

    from pipeline.train_fraud import train_fraud

    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    before = registry.aliases(name)
    versions_before = len(
        MlflowClient(trained_lab.tracking_uri).search_model_versions(f"name='{name}'")
    )
    # As of the first simulated day there is no history to split: the flow fails loudly.
    as_of = dt.datetime.combine(trained_lab.settings.simulator.start_date, dt.time(12), dt.UTC)
    state = train_fraud(as_of=as_of, tracking_uri=trained_lab.tracking_uri, return_state=True)
    assert isinstance(state, State) and state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ValueError), repr(error)
    assert str(error).startswith("not enough history: need more than"), str(error)
    assert registry.aliases(name) == before
    assert (
        len(MlflowClient(trained_lab.tracking_uri).search_model_versions(f"name='{name}'"))
        == versions_before
    )


def test_a_flow_that_fails_while_registering_ends_its_run_failed(trained_lab, monkeypatch):
    """The registry refuses mid-flow: the MLflow run is marked FAILED (not FINISHED), and no
    alias moves."""
    from prefect.states import State

    from pipeline import tracking
    from pipeline.train_fraud import train_fraud

    def registry_down(**_: object) -> None:
        raise ConnectionError("registry unavailable (injected)")

    # (train_fraud imports it from pipeline.tracking when it registers.)
    monkeypatch.setattr(tracking, "register_and_gate", registry_down)
    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    before = registry.aliases(name)
    client = MlflowClient(trained_lab.tracking_uri)
    experiment = client.get_experiment_by_name(trained_lab.settings.training.experiment)
    state = train_fraud(seed=3, tracking_uri=trained_lab.tracking_uri, return_state=True)
    assert isinstance(state, State) and state.is_failed()
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert latest.info.run_name == "train_fraud" and latest.info.status == "FAILED"
    assert registry.aliases(name) == before


def test_recsys_version_beats_popularity_and_wrote_its_vectors_to_the_store(trained_lab):
    from features.embeddings import read_embeddings

    client = MlflowClient(trained_lab.tracking_uri)
    name = trained_lab.recsys_model_name
    (version,) = trained_lab.recsys_versions
    outcome = trained_lab.outcomes["recsys"][0]
    assert outcome["decision"] == "champion"
    mv = client.get_model_version(name, version)
    assert mv.tags["feature_service"] == "recsys_ranking"
    metrics = client.get_run(mv.run_id).data.metrics
    assert metrics["ndcg_at_10"] > metrics["baseline_popularity_ndcg_at_10"]
    assert 0 < metrics["coverage_at_10"] <= 1
    assert "plots/recall_at_k.png" in {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    users = read_embeddings(trained_lab.settings, "user")
    assert len(users) > 100
    assert set(users["user_embedding_version"]) == {version}


def test_training_flows_are_served_as_deployments():
    from pipeline.deployments import deployments

    served = {d.name: d for d in deployments()}
    assert set(served) == {"train_fraud", "train_recsys"}
    for deployment in served.values():
        assert deployment.triggers, "a retrain must be startable by an event"
        assert (
            deployment.concurrency_limit == 1
            or getattr(deployment.concurrency_limit, "limit", None) == 1
        )
