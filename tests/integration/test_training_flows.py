"""The training flows against a real MLflow server and a real Prefect API: what lands in the
registry, and what the registration gate lets through."""

from __future__ import annotations

import datetime as dt

import mlflow
import pytest
from mlflow import MlflowClient

from mlsd.registry import CHALLENGER, CHAMPION, ModelRegistry

pytestmark = pytest.mark.integration


def test_fraud_versions_carry_metrics_features_and_the_feature_service(trained_lab):
    client = MlflowClient(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    first, second = trained_lab.fraud_versions
    assert int(second) == int(first) + 1
    for version in trained_lab.fraud_versions:
        mv = client.get_model_version(name, version)
        assert mv.tags["feature_service"] == "fraud_scoring"
        assert "amount_over_card_mean" in mv.tags["features"].split(",")
        assert 0.0 < float(mv.tags["threshold"]) < 1.0
        assert mv.tags["gate.decision"] in {"champion", "challenger", "rejected"}
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


def test_first_fraud_version_became_champion_and_the_retrain_was_judged_against_it(trained_lab):
    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    first, second = trained_lab.fraud_versions
    outcomes = trained_lab.outcomes["fraud"]
    assert outcomes[0]["decision"] == "champion"
    history = registry.history(name)
    assert history[0].alias == CHAMPION and history[0].version == first
    # The retrain was compared with the champion on the same validation window.
    assert outcomes[1]["champion_metrics"], outcomes[1]
    assert outcomes[1]["decision"] in {"challenger", "rejected"}
    aliases = registry.aliases(name)
    assert aliases[CHAMPION] == first
    if outcomes[1]["decision"] == "challenger":
        assert aliases[CHALLENGER] == second


def test_served_model_loads_with_skops_and_scores(trained_lab):
    name = trained_lab.fraud_model_name
    model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    features = list(model.feature_names_in_)
    import pandas as pd

    row = pd.DataFrame([dict.fromkeys(features, 0.0)])
    score = model.predict_proba(row)[:, 1]
    assert 0.0 <= float(score[0]) <= 1.0


def test_a_model_trained_on_shuffled_labels_is_refused_and_no_alias_moves(trained_lab):
    from pipeline.train_fraud import train_fraud

    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    before = registry.aliases(name)
    outcome = train_fraud(seed=2, shuffle_labels=True, tracking_uri=trained_lab.tracking_uri)
    assert outcome["decision"] == "rejected"
    assert any("floor" in r or "worse than the champion" in r for r in outcome["reasons"]), outcome[
        "reasons"
    ]
    assert registry.aliases(name) == before
    # Refused, yet recorded: the version exists with the reason on it.
    tags = registry.version_tags(name, outcome["version"])
    assert tags["gate.decision"] == "rejected"


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
    state = train_fraud(
        as_of=dt.datetime.combine(trained_lab.settings.simulator.start_date, dt.time(12), dt.UTC),
        tracking_uri=trained_lab.tracking_uri,
        return_state=True,
    )
    assert isinstance(state, State) and state.is_failed()
    assert "not enough history" in str(state.message) or "history" in repr(
        state.result(raise_on_failure=False)
    )
    assert registry.aliases(name) == before
    assert (
        len(MlflowClient(trained_lab.tracking_uri).search_model_versions(f"name='{name}'"))
        == versions_before
    )


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
