"""What a fraud model server builds from a registry version (a real MLflow registry on SQLite):
the version's ONNX graph when it agrees with the scikit-learn model, a graph converted at load
for a version logged without one, and scikit-learn, with the reason logged, when the graph
logged with the version is another model's."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlsd.settings import Settings
from models.fraud import SKOPS_TRUSTED_TYPES, FraudTrainingConfig, fit_gradient_boosting
from models.fraud_onnx import ONNX_FILE, export_fraud_onnx, probability_tolerance

pytestmark = pytest.mark.integration

FEATURES = ["amount", "count_1h", "new_device", "distance"]


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "count_1h": rng.poisson(1.5, n).astype(float),
            "new_device": rng.integers(0, 2, n).astype(float),
            "distance": rng.normal(0, 1, n),
        }
    )
    logit = -4 + 0.8 * np.log(X["amount"]) + 1.5 * X["new_device"] + X["distance"]
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def _fit(seed: int, max_iter: int) -> object:
    X, y = _data(3_000, seed)
    X_cal, y_cal = _data(1_500, seed + 1)
    cfg = FraudTrainingConfig(max_iter=max_iter, negative_sample_rate=0.5, seed=seed)
    return fit_gradient_boosting(X, y, X_cal, y_cal, cfg)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> tuple[str, dict[str, str], object]:
    """One model registered three times: with its own graph, with another model's graph, and
    with none (as versions trained before graphs were logged)."""
    root = tmp_path_factory.mktemp("onnx-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    name = Settings().training.model_name("fraud")
    model, other = _fit(0, 40), _fit(5, 10)
    graphs = {"own": export_fraud_onnx(model), "another model's": export_fraud_onnx(other)}
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    versions: dict[str, str] = {}
    try:
        experiment = mlflow.create_experiment("onnx", artifact_location=str(root / "artifacts"))
        for case in ("own", "another model's", "none"):
            extra = []
            if case in graphs:
                path = root / case.replace(" ", "_").replace("'", "") / ONNX_FILE
                path.parent.mkdir()
                path.write_bytes(graphs[case])
                extra = [str(path)]
            with mlflow.start_run(experiment_id=experiment):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=SKOPS_TRUSTED_TYPES,
                    pip_requirements=["scikit-learn"],
                    extra_files=extra or None,
                )
            tags = {"features": ",".join(FEATURES), "threshold": "0.5"}
            versions[case] = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)
    return uri, versions, model


def _load(uri: str, version: str):
    from serving.inference import load_fraud_version

    return load_fraud_version(Settings(), version, uri)


def test_the_versions_own_graph_scores_like_scikit_learn(registry) -> None:
    from serving.inference import score_fraud

    uri, versions, model = registry
    served = _load(uri, versions["own"])
    assert served.compiled is not None and served.scoring_path.startswith("onnxruntime")
    X, _ = _data(30, 9)
    rows = X.to_dict("records")
    scores = [p.score for p in score_fraud(served, rows)]
    expected = model.predict_proba(X[FEATURES].to_numpy())[:, 1]  # type: ignore[attr-defined]
    assert scores == pytest.approx(expected.tolist(), abs=probability_tolerance(model))


def test_a_graph_of_another_model_is_refused_and_scikit_learn_scores_saying_why(
    registry, caplog
) -> None:
    from serving.inference import score_fraud

    uri, versions, model = registry
    with caplog.at_level(logging.WARNING, logger="serving.inference"):
        served = _load(uri, versions["another model's"])
    assert served.compiled is None
    assert "differ from scikit-learn" in served.scoring_path
    assert served.scoring_path.startswith("scikit-learn")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("scores with scikit-learn" in m and "differ from" in m for m in warned), warned
    # The answers are the registered model's own, exactly.
    X, _ = _data(30, 9)
    scores = [p.score for p in score_fraud(served, X.to_dict("records"))]
    expected = model.predict_proba(X[FEATURES].to_numpy())[:, 1]  # type: ignore[attr-defined]
    assert scores == expected.tolist()


def test_a_version_logged_without_a_graph_is_converted_at_load(registry, caplog) -> None:
    uri, versions, _ = registry
    with caplog.at_level(logging.INFO, logger="serving.inference"):
        served = _load(uri, versions["none"])
    assert served.compiled is not None
    assert any("converted at load" in r.getMessage() for r in caplog.records)


def test_the_graph_lands_among_the_version_files(registry, tmp_path: Path) -> None:
    from mlsd.registry import ModelRegistry

    uri, versions, _ = registry
    name = Settings().training.model_name("fraud")
    with ModelRegistry(uri).downloaded(name, versions["own"]) as folder:
        assert (folder / "extra_files" / ONNX_FILE).is_file()
    with ModelRegistry(uri).downloaded(name, versions["none"]) as folder:
        assert not list(folder.rglob(ONNX_FILE))


def test_the_loading_process_keeps_mlflow_and_scikit_learn_to_itself(registry) -> None:
    """A server that scores with the graph never imports what reads the estimator: the
    download and the check run in a child process that exits after."""
    from tests.support.child import python_json

    uri, versions, _ = registry
    child = (
        "import json, sys\n"
        "from mlsd.settings import Settings\n"
        "from serving.inference import load_fraud_version\n"
        f"served = load_fraud_version(Settings(), {versions['own']!r}, {uri!r})\n"
        "heavy = ('mlflow', 'sklearn', 'skops')\n"
        "print(json.dumps({'path': served.scoring_path,\n"
        "    'estimator_kept': served.estimator is not None,\n"
        "    'imported': sorted(m for m in heavy if m in sys.modules)}))\n"
    )
    seen = python_json(child, timeout=300)
    assert seen["path"].startswith("onnxruntime")
    assert seen["estimator_kept"] is False
    assert seen["imported"] == []


def test_read_in_process_it_serves_the_same_graph(registry) -> None:
    """What a shadow server (lowered priority) does: the version read in its own process
    scores with the same checked graph, the estimator left aside."""
    from serving.inference import load_fraud_version

    uri, versions, _ = registry
    here = load_fraud_version(Settings(), versions["own"], uri, isolated=False)
    child = _load(uri, versions["own"])
    assert here.compiled is not None and here.estimator is None
    assert here.compiled.graph == child.compiled.graph  # type: ignore[union-attr]
    assert (here.features, here.threshold, here.version) == (
        child.features,
        child.threshold,
        child.version,
    )


def test_a_version_the_registry_does_not_have_is_missing_not_a_fault(registry) -> None:
    """MLflow's refusal crosses the process with its code: the server answers 404, not 503."""
    from serving.inference.startup import RegistryRefused

    uri, _, _ = registry
    with pytest.raises(RegistryRefused) as refused:
        _load(uri, "999")
    assert refused.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "999" in str(refused.value)
