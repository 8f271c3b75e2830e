"""The `train_fraud` Prefect flow: build its training set (`pipeline.fraud_training_set`), check
it, train the scorer and its baselines on a time split, evaluate under a cost model, register,
gate."""

# No `from __future__ import annotations` here: a run of this flow starts in memory
# (mlsd/flows.py), with the function by value (cloudpickle), which keeps only the globals
# its body names; Prefect validates the run's parameters against its annotations, so they
# must be objects, not names ("`dt` is not defined": the run failed).

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from pipeline.evaluation import CostModel, choose_threshold, fraud_metrics, paired_delta_interval
from pipeline.fraud_training_set import (
    FEATURE_SERVICE,
    FraudTrainingSet,
    build_training_set,
    check_training_set,
)
from pipeline.registration_gate import DeltaInterval, GatePolicy

# Frauds a validation window needs before the gate reads a bootstrap interval of the PR-AUC
# delta: with fewer, many resamples hold no fraud at all and the interval says little.
MIN_INTERVAL_POSITIVES = 10
IMBALANCE_STRATEGY = (
    "~0.5% positives. Negatives down-sampled to {rate:.0%} in the training window only (every "
    "fraud kept); gradient boosting weights a fraud {weight}x; scores isotonic-calibrated on the "
    "later calibration window at the true class ratio, which is where the cost-model threshold "
    "is chosen. Metrics are on the validation window, never seen in training or calibration."
)


@task(name="train models", cache_policy=NO_CACHE)
def train_models(
    settings: Settings, ts: FraudTrainingSet, seed: int, shuffle_labels: bool
) -> dict[str, Any]:
    """The gradient-boosted scorer and its two baselines, on the same windows."""
    from models.fraud import (
        FraudTrainingConfig,
        fit_gradient_boosting,
        fit_logistic_baseline,
    )
    from models.rules import RuleScorer

    cfg = settings.training.fraud
    train = ts.frame[ts.frame["window"] == "train"]
    cal = ts.frame[ts.frame["window"] == "calibrate"]
    y_train = train["is_fraud"].to_numpy()
    if shuffle_labels:
        # A deliberately broken model for the gate to refuse: labels no longer match the rows.
        y_train = np.random.default_rng(seed).permutation(y_train)
    # Training rows were already down-sampled before the join; do not sample again.
    model_cfg = FraudTrainingConfig(
        negative_sample_rate=1.0, positive_weight=cfg.positive_weight, seed=seed
    )
    X_train, X_cal, y_cal = train[ts.features], cal[ts.features], cal["is_fraud"].to_numpy()
    return {
        "gbm": fit_gradient_boosting(X_train, y_train, X_cal, y_cal, model_cfg),
        "logistic": fit_logistic_baseline(X_train, y_train, X_cal, y_cal, model_cfg),
        "rules": RuleScorer().fit(X_train),
    }


def score(model: Any, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return np.asarray(model.predict_proba(frame[features])[:, 1], dtype=float)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    settings: Settings, ts: FraudTrainingSet, models: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Per model: threshold from the calibration window's cost, metrics on the validation window."""
    cost = CostModel(false_alarm_cost=settings.training.fraud.false_alarm_cost)
    return {name: judge(model, ts, ts.features, cost) for name, model in models.items()}


def judge(
    model: Any, ts: FraudTrainingSet, features: list[str], cost: CostModel
) -> dict[str, float]:
    """Threshold from the calibration window's cost, metrics on the validation window: the same
    rule for the candidate, its baselines and the champion it is compared with."""
    cal = ts.frame[ts.frame["window"] == "calibrate"]
    val = ts.frame[ts.frame["window"] == "validate"]
    threshold = choose_threshold(
        cal["is_fraud"].to_numpy(), score(model, cal, features), cal["amount"].to_numpy(), cost
    )
    return fraud_metrics(
        val["is_fraud"].to_numpy(),
        score(model, val, features),
        val["amount"].to_numpy(),
        threshold,
        cost,
    )


def _plots(ts: FraudTrainingSet, model: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import PrecisionRecallDisplay

    from pipeline.tracking import log_figure

    val = ts.frame[ts.frame["window"] == "validate"]
    y, s = val["is_fraud"].to_numpy(), score(model, val, ts.features)
    fig, ax = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(y, s, ax=ax, name="gbm")
    ax.axhline(y.mean(), ls="--", c="grey", label="random")
    ax.set_title("precision-recall, validation window")
    log_figure(fig, "pr_curve")
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(prob_pred, prob_true, marker="o")
    ax.plot([0, max(prob_pred.max(), 1e-3)], [0, max(prob_pred.max(), 1e-3)], ls="--", c="grey")
    ax.set(
        xlabel="predicted probability",
        ylabel="observed fraud rate",
        title="calibration (quantile bins)",
    )
    log_figure(fig, "calibration")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist([s[y == 0], s[y == 1]], bins=40, log=True, label=["legit", "fraud"])
    ax.legend()
    ax.set_title("score histogram, validation window")
    log_figure(fig, "score_histogram")


def monitoring_reference(ts: FraudTrainingSet, model: Any) -> pd.DataFrame:
    """The latest days' payments (`ts.recent`, at the true class ratio) as the prediction log
    records them: the model's features, the request's amount and country, this version's score
    and the label known when it was trained (most of the latest days' frauds are not reported
    yet: drift is judged without labels, and the window's own labels judge performance).

    The latest days, not the calibration and validation windows: those end
    `label_maturity_days` before the data does, when a young world still grows its windowed
    counts. Measured on the demo's world (40 days, no scenario, three 3-day windows after it):
    against the calibration and validation windows 0.19 of the inputs drifted (the 30 d card
    count at 0.48-0.54, the merchant counts, then over 90 days); against the latest 3 days
    0.05-0.10 (the 90 d merchant counts alone, since cut to 30 days)."""
    reference = ts.recent[[*ts.features, "amount", "country"]].reset_index(drop=True)
    reference["score"] = score(model, ts.recent, ts.features)
    reference["label"] = ts.recent["is_fraud"].to_numpy()
    return reference


@task(name="register and gate", cache_policy=NO_CACHE)
def register(
    settings: Settings,
    ts: FraudTrainingSet,
    models: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    checks: dict[str, Any],
    tracking_uri: str,
) -> dict[str, Any]:
    """Log the run (params, metrics, plots, model) and apply the registration gate to the aliases."""
    import mlflow
    from mlflow.models import infer_signature

    from models.fraud import SKOPS_TRUSTED_TYPES
    from pipeline.tracking import (
        ChampionOnWindow,
        active_run_id,
        log_json,
        log_reference,
        onnx_beside,
        pinned_requirements,
        register_and_gate,
    )

    cfg = settings.training.fraud
    name = settings.training.fraud_model_name
    model = models["gbm"]
    val = ts.frame[ts.frame["window"] == "validate"]
    positive_rate = float(ts.frame.loc[ts.frame["window"] == "validate", "is_fraud"].mean())
    mlflow.log_params(
        {
            "feature_service": FEATURE_SERVICE,
            "n_features": len(ts.features),
            "as_of": ts.as_of.isoformat(),
            **ts.split.as_params(),
            "reference_start": ts.recent_since.isoformat(),
            "reference_end": ts.recent_until.isoformat(),
            "rows_reference": len(ts.recent),
            "label_maturity_days": cfg.label_maturity_days,
            "negative_sample_rate": cfg.negative_sample_rate,
            "positive_weight": cfg.positive_weight,
            "false_alarm_cost": cfg.false_alarm_cost,
            "estimator": "HistGradientBoostingClassifier + isotonic calibration",
            **{
                f"rows_{w}": int((ts.frame["window"] == w).sum())
                for w in ("train", "calibrate", "validate")
            },
        }
    )
    mlflow.set_tag(
        "imbalance_strategy",
        IMBALANCE_STRATEGY.format(rate=cfg.negative_sample_rate, weight=cfg.positive_weight),
    )
    baselines = {
        f"baseline_{b}_{k}": v for b in ("logistic", "rules") for k, v in metrics[b].items()
    }
    primary = {
        **metrics["gbm"],
        "pr_auc_lift_over_base_rate": metrics["gbm"]["pr_auc"] / max(positive_rate, 1e-9),
        **{
            k: v
            for k, v in baselines.items()
            if k.endswith(("_pr_auc", "_roc_auc", "_expected_cost"))
        },
    }
    mlflow.log_metrics({**primary, **baselines})
    log_json({"features": ts.features, "checks": checks}, "training_set.json")
    log_reference(monitoring_reference(ts, model))
    _plots(ts, model)
    # Declared as doubles: a feature may be missing (NaN) at serving time, which an integer
    # column cannot hold (MLflow warned about exactly that when the signature said int).
    example = val[ts.features].head(5)
    example = example.astype(
        {c: "float64" for c in example.columns if pd.api.types.is_integer_dtype(example[c])}
    )
    graph_dir = tempfile.TemporaryDirectory()  # the ONNX graph, logged beside the model
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pip_requirements=pinned_requirements("scikit-learn", "numpy", "scipy", "skops"),
        signature=infer_signature(example, score(model, example, ts.features)),
        input_example=example,
        metadata={"feature_service": FEATURE_SERVICE, "features": ts.features},
        extra_files=onnx_beside(model, Path(graph_dir.name)),
    )
    graph_dir.cleanup()

    registry = ModelRegistry(tracking_uri)

    def champion_metrics(version: str) -> ChampionOnWindow | None:
        champion = registry.load_sklearn(name, version)
        features = list(getattr(champion, "feature_names_in_", ts.features))
        if not set(features) <= set(val.columns):
            return None
        metrics = judge(champion, ts, features, CostModel(false_alarm_cost=cfg.false_alarm_cost))
        y = val["is_fraud"].to_numpy()
        # Too few frauds for a bootstrap to mean anything: the margin alone decides.
        if not MIN_INTERVAL_POSITIVES <= y.sum() < y.size:
            return ChampionOnWindow(metrics)
        try:
            low, high = paired_delta_interval(
                y,
                score(model, val, ts.features),
                score(champion, val, features),
                confidence=cfg.gate_confidence,
            )
        except ValueError as err:  # no interval: the margin alone decides, as before
            mlflow.set_tag("gate.interval_error", f"{err}"[:500])
            return ChampionOnWindow(metrics)
        interval = DeltaInterval(low, high, cfg.gate_confidence, len(y), int(y.sum()))
        return ChampionOnWindow(metrics, interval)

    policy = GatePolicy(
        metric="pr_auc",
        margin=cfg.gate_margin,
        floors={"pr_auc": cfg.min_lift_over_base_rate * positive_rate},
    )
    outcome = register_and_gate(
        registry=registry,
        model_name=name,
        model_uri=info.model_uri,
        run_id=active_run_id(),
        policy=policy,
        data_checks_passed=bool(checks["success"]),
        metrics=primary,
        champion_metrics_on_same_window=champion_metrics,
        version_tags={
            "feature_service": FEATURE_SERVICE,
            "features": ",".join(ts.features),
            "trained_from": ts.split.train_start.isoformat(),
            "trained_until": ts.split.train_end.isoformat(),
            "validated_on": f"{ts.split.calibrate_end.isoformat()}/{ts.split.validate_end.isoformat()}",
            "threshold": f"{primary['threshold']:.6f}",
        },
    )
    return outcome.as_dict()


@flow(name="train_fraud", log_prints=True)
def train_fraud(
    as_of: dt.datetime | None = None,
    seed: int = 0,
    shuffle_labels: bool = False,
    tracking_uri: str | None = None,
    label_maturity_days: float | None = None,
    flip_flag: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, register and gate a fraud model on the offline store as of `as_of`.

    `label_maturity_days` overrides the setting: a retrain after drift uses the most recent
    days (the drifted ones) although their chargebacks are still arriving. `flip_flag` is the
    bad-model drill (`make demo`'s second act): a 0/1 input computed with the opposite
    convention in training, a training-serving skew the offline gate cannot see."""

    from pipeline.deployments import yield_to_serving
    from pipeline.tracking import announce, start_run, verdict_state

    settings = Settings()
    yield_to_serving(settings.training.deployment_niceness)
    uri = tracking_uri or settings.mlflow_tracking_uri
    logger = get_run_logger()
    ts = build_training_set(settings, as_of, seed, label_maturity_days, flip_flag)
    checks = check_training_set(ts)
    models = train_models(settings, ts, seed, shuffle_labels)
    metrics = evaluate(settings, ts, models)
    logger.info("validation metrics: %s", {k: round(v["pr_auc"], 4) for k, v in metrics.items()})
    with start_run(
        uri,
        settings.training.experiment,
        "train_fraud",
        {
            "model": "fraud",
            "shuffle_labels": str(shuffle_labels),
            **({"drill": f"flip_flag={flip_flag}"} if flip_flag else {}),
        },
    ):
        outcome = register(settings, ts, models, metrics, checks, uri)
    logger.info(
        "v%s: %s (%s)", outcome["version"], outcome["decision"], "; ".join(outcome["reasons"])
    )
    announce("fraud", outcome)
    # The flow run's state says refused or accepted; the caller still gets the outcome dict.
    return verdict_state(outcome)
