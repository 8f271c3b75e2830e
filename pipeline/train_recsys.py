"""The `train_recsys` Prefect flow: retrieval towers (implicit ALS), a boosted ranker over Feast
features, popularity and genre fallbacks; evaluated against popularity on a later window."""

# No `from __future__ import annotations` here: a run of this flow starts in memory
# (mlsd/flows.py), with the function by value (cloudpickle), which keeps only the globals
# its body names; Prefect validates the run's parameters against its annotations, so they
# must be objects, not names ("`dt` is not defined": the run failed).

import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlsd.registry import CHAMPION, ModelRegistry
from mlsd.settings import Settings
from models.recsys_bundle import (
    RETRIEVAL_SCORE,
    RecsysBundle,
    candidates_for,
    load_bundle,
    recommend,
)
from pipeline.evaluation import catalogue_coverage, ndcg_at_k, recall_at_k
from pipeline.registration_gate import GatePolicy

FEATURE_SERVICE = "recsys_ranking"
RANKER_USERS = 1_000
K = 10


@dataclass
class RecsysData:
    interactions: pd.DataFrame
    items: pd.DataFrame
    as_of: dt.datetime
    ranker_start: dt.datetime
    validate_start: dt.datetime

    def window(self, start: dt.datetime | None, end: dt.datetime) -> pd.DataFrame:
        t = self.interactions["event_timestamp"]
        keep = t < end if start is None else (t >= start) & (t < end)
        return self.interactions[keep]


@task(name="load interactions", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_data(settings: Settings, as_of: dt.datetime | None) -> RecsysData:
    from pipeline.offline_store import read_offline

    interactions = read_offline(settings, "recsys", "interactions")
    if interactions.empty:
        raise RuntimeError(
            "the offline store has no recsys interactions: run `mlsd simulate recsys` and `mlsd ingest`"
        )
    as_of = as_of or interactions["event_timestamp"].max().to_pydatetime()
    cfg = settings.training.recsys
    validate_start = as_of - dt.timedelta(days=cfg.validate_days)
    ranker_start = validate_start - dt.timedelta(days=cfg.ranker_days)
    if ranker_start <= interactions["event_timestamp"].min():
        raise ValueError(
            f"not enough history for {cfg.ranker_days} + {cfg.validate_days} days before {as_of}"
        )
    interactions = interactions[interactions["event_timestamp"] <= as_of]
    return RecsysData(
        interactions, read_offline(settings, "recsys", "items"), as_of, ranker_start, validate_start
    )


def _fallbacks(
    data: RecsysData, plays: pd.DataFrame, embedded_items: set[str], until: dt.datetime
) -> dict[str, Any]:
    """Popularity over the last week, fresh releases per genre, each user's favourite genres."""
    from models.recsys import popularity_ranking

    genre = data.items.set_index("item_id")["genre"]
    recent = plays[plays["event_timestamp"] >= until - dt.timedelta(days=7)]
    fresh = data.items[
        (data.items["released_at"] >= until - dt.timedelta(days=14))
        & (data.items["released_at"] < until)
    ]
    fresh = fresh[~fresh["item_id"].isin(embedded_items)]
    fresh_by_genre = {
        g: f.sort_values("released_at", ascending=False)["item_id"].tolist()
        for g, f in fresh.groupby("genre")
    }
    shares = plays.assign(genre=plays["item_id"].map(genre)).groupby(["user_id", "genre"]).size()
    favourite = {
        u: s.droplevel(0).sort_values(ascending=False).index.tolist()[:3]
        for u, s in shares.groupby(level=0)
    }
    return {
        "popular": popularity_ranking(recent),
        "fresh_by_genre": fresh_by_genre,
        "favourite_genres": favourite,
    }


def ranker_feature_frame(
    settings: Settings, rows: pd.DataFrame, feature_names: list[str]
) -> pd.DataFrame:
    """Point-in-time features of (user, item, time) rows from Feast, in the ranker's order."""
    from features.store import training_frame

    frame = training_frame(
        rows[["user_id", "item_id", "event_timestamp"]], FEATURE_SERVICE, settings=settings
    )
    return frame[feature_names].reset_index(drop=True)


@task(name="train retrieval and ranker", cache_policy=NO_CACHE)
def train_bundle(settings: Settings, data: RecsysData, seed: int) -> RecsysBundle:
    """Towers first, then a ranker that learns to reorder the towers' own candidates.

    The ranker is trained on the task it serves: for users of the ranker window, the candidates
    that towers fitted *before* that window retrieve, labelled by whether the user then played
    them. (Training it on logged impressions instead would learn P(play | shown) and unlearn the
    exposure that real consumption depends on; measured: NDCG@10 fell below retrieval's.)
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    from features.catalog import SERVICES, service_features
    from models.recsys import ALSConfig, fit_als

    cfg = settings.training.recsys
    als = ALSConfig(factors=cfg.factors, iterations=cfg.als_iterations, seed=seed)
    plays = data.interactions[data.interactions["event"] == "play"]
    before_ranker = plays[plays["event_timestamp"] < data.ranker_start]
    early_towers = fit_als(before_ranker, als)
    early_side = _fallbacks(data, before_ranker, set(early_towers.item_ids), data.ranker_start)
    early = RecsysBundle(early_towers, ranker=None, ranker_features=[], **early_side)
    window = data.window(data.ranker_start, data.validate_start)
    played = window[window["event"] == "play"].groupby("user_id")["item_id"].apply(set)
    index = early.embeddings.user_index()
    users = [u for u in sorted(played.index) if u in index]
    users = list(
        np.random.default_rng(seed).choice(users, size=min(RANKER_USERS, len(users)), replace=False)
    )
    rows, retrieval, labels = [], [], []
    for user in users:
        items, scores = candidates_for(early, user, cfg.candidates // 2, index)
        rows += [(user, item) for item in items]
        retrieval.append(scores)
        labels += [item in played[user] for item in items]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(
        event_timestamp=pd.Timestamp(data.ranker_start)
    )
    service_names = [f.name for f in service_features(SERVICES[FEATURE_SERVICE])]
    X = ranker_feature_frame(settings, frame, service_names)
    X[RETRIEVAL_SCORE] = np.concatenate(retrieval)
    ranker = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, early_stopping=True, random_state=seed
    )
    ranker.fit(X, np.array(labels, dtype=int))
    # Served towers learn from everything before validation.
    before_validation = plays[plays["event_timestamp"] < data.validate_start]
    final = fit_als(before_validation, als)
    side = _fallbacks(data, before_validation, set(final.item_ids), data.validate_start)
    return RecsysBundle(final, ranker, list(X.columns), **side)


@dataclass
class EvaluationSet:
    users: list[str]
    relevant: list[set[str]]
    at: dt.datetime
    catalogue_size: int


@task(name="evaluation set", cache_policy=NO_CACHE)
def evaluation_set(settings: Settings, data: RecsysData, seed: int) -> EvaluationSet:
    """Users who play in the validation window, and what they played (sampled for speed)."""
    plays = data.window(data.validate_start, data.as_of + dt.timedelta(microseconds=1))
    plays = plays[plays["event"] == "play"]
    relevant = plays.groupby("user_id")["item_id"].apply(set)
    rng = np.random.default_rng(seed)
    users = sorted(relevant.index)
    users = list(
        rng.choice(users, size=min(settings.training.recsys.eval_users, len(users)), replace=False)
    )
    released = data.items[data.items["released_at"] < data.validate_start]
    return EvaluationSet(users, [relevant[u] for u in users], data.validate_start, len(released))


def evaluate_bundle(
    settings: Settings, bundle: RecsysBundle, ev: EvaluationSet
) -> dict[str, float]:
    """NDCG@10, recall@10/@50, coverage of the two-stage model, with the same features as of the
    validation start for every candidate (one batched point-in-time join)."""
    n = settings.training.recsys.candidates
    index = bundle.embeddings.user_index()
    pairs, retrieved = [], []
    for user in ev.users:
        items, _ = candidates_for(bundle, user, n, index)
        pairs += [(user, item) for item in items]
        retrieved.append(items)
    rows = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    rows["event_timestamp"] = pd.Timestamp(ev.at)
    service_names = [f for f in bundle.ranker_features if f != RETRIEVAL_SCORE]
    features = ranker_feature_frame(settings, rows, service_names) if len(rows) else pd.DataFrame()
    by_user = (
        {u: f for u, f in features.assign(user_id=rows["user_id"].to_numpy()).groupby("user_id")}
        if len(rows)
        else {}
    )

    def lookup(user: str, items: Sequence[str]) -> pd.DataFrame:
        return by_user[user]  # recommend reads the ranker's columns by name

    recommended, paths = [], []
    for user in ev.users:
        recs, _, path = recommend(bundle, user, K, n, lookup, index)
        recommended.append(recs)
        paths.append(path)
    metrics = {
        "ndcg_at_10": ndcg_at_k(recommended, ev.relevant, 10),
        "recall_at_10": recall_at_k(recommended, ev.relevant, 10),
        "retrieval_recall_at_100": recall_at_k(retrieved, ev.relevant, n),
        "retrieval_ndcg_at_10": ndcg_at_k(retrieved, ev.relevant, 10),
        "coverage_at_10": catalogue_coverage(recommended, ev.catalogue_size, 10),
        "cold_start_share": paths.count("popularity") / max(len(paths), 1),
    }
    for k in (1, 5, 20, 50):
        metrics[f"retrieval_recall_at_{k}"] = recall_at_k(retrieved, ev.relevant, k)
    return metrics


def popularity_metrics(bundle: RecsysBundle, ev: EvaluationSet) -> dict[str, float]:
    top = [bundle.popular[:K]] * len(ev.users)
    return {
        "ndcg_at_10": ndcg_at_k(top, ev.relevant, 10),
        "recall_at_10": recall_at_k(top, ev.relevant, 10),
        "coverage_at_10": catalogue_coverage(top, ev.catalogue_size, 10),
    }


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(settings: Settings, bundle: RecsysBundle, ev: EvaluationSet) -> dict[str, float]:
    metrics = evaluate_bundle(settings, bundle, ev)
    metrics.update(
        {f"baseline_popularity_{k}": v for k, v in popularity_metrics(bundle, ev).items()}
    )
    metrics["ndcg_lift_over_popularity"] = metrics["ndcg_at_10"] / max(
        metrics["baseline_popularity_ndcg_at_10"], 1e-9
    )
    return metrics


@task(name="check training set", cache_policy=NO_CACHE)
def check_data(data: RecsysData) -> dict[str, Any]:
    from pipeline.data_checks import check_training_frame

    frame = data.window(None, data.validate_start).assign(
        label=lambda f: (f["event"] == "play").astype(int)
    )
    return check_training_frame(
        frame, ["position", "dwell_seconds"], label="label", min_rows=1_000, label_rate=(0.01, 0.99)
    )


def _recall_curve(metrics: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.tracking import log_figure

    ks = [1, 5, 10, 20, 50, 100]
    values = [metrics.get(f"retrieval_recall_at_{k}", np.nan) for k in ks]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ks, values, marker="o")
    ax.set(
        xscale="log", xlabel="K", ylabel="recall@K", title="retrieval recall@K, validation window"
    )
    log_figure(fig, "recall_at_k")


@task(name="register and gate", cache_policy=NO_CACHE)
def register(
    settings: Settings,
    data: RecsysData,
    bundle: RecsysBundle,
    ev: EvaluationSet,
    metrics: dict[str, float],
    checks: dict[str, Any],
    tracking_uri: str,
) -> dict[str, Any]:
    import mlflow
    from mlflow.models import infer_signature

    from features.embeddings import write_embeddings
    from pipeline.tracking import (
        ChampionOnWindow,
        active_run_id,
        log_json,
        pinned_requirements,
        register_and_gate,
    )

    cfg = settings.training.recsys
    name = settings.training.recsys_model_name
    mlflow.log_params(
        {
            "feature_service": FEATURE_SERVICE,
            "as_of": data.as_of.isoformat(),
            "retrieval_train_until": data.ranker_start.isoformat(),
            "ranker_window": f"{data.ranker_start.isoformat()}/{data.validate_start.isoformat()}",
            "validate_window": f"{data.validate_start.isoformat()}/{data.as_of.isoformat()}",
            "factors": cfg.factors,
            "als_iterations": cfg.als_iterations,
            "candidates": cfg.candidates,
            "eval_users": len(ev.users),
            "users_embedded": len(bundle.embeddings.user_ids),
            "items_embedded": len(bundle.embeddings.item_ids),
        }
    )
    mlflow.log_metrics(metrics)
    log_json({"ranker_features": bundle.ranker_features, "checks": checks}, "training_set.json")
    _recall_curve(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        side_files = bundle.save_side_files(Path(tmp))
        example = pd.DataFrame([dict.fromkeys(bundle.ranker_features, 0.0)])
        info = mlflow.sklearn.log_model(
            bundle.ranker,
            name="model",
            serialization_format="skops",
            skops_trusted_types=[
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                "numpy.dtype",
            ],
            pip_requirements=pinned_requirements("scikit-learn", "numpy", "scipy", "skops"),
            signature=infer_signature(example, bundle.ranker.predict_proba(example)[:, 1]),
            input_example=example,
            extra_files=[str(p) for p in side_files],
            metadata={"feature_service": FEATURE_SERVICE, "two_stage": True},
        )

    registry = ModelRegistry(tracking_uri)

    def champion_metrics(version: str) -> ChampionOnWindow | None:
        # No interval: NDCG@10 over 1,000 sampled listeners; the margin alone decides.
        champion = load_bundle(registry, name, version)
        return ChampionOnWindow(evaluate_bundle(settings, champion, ev))

    outcome = register_and_gate(
        registry=registry,
        model_name=name,
        model_uri=info.model_uri,
        run_id=active_run_id(),
        policy=GatePolicy(
            metric="ndcg_at_10", margin=cfg.gate_margin, floors={"ndcg_lift_over_popularity": 1.0}
        ),
        data_checks_passed=bool(checks["success"]),
        metrics=metrics,
        champion_metrics_on_same_window=champion_metrics,
        version_tags={
            "feature_service": FEATURE_SERVICE,
            "trained_until": data.validate_start.isoformat(),
        },
    )
    if outcome.decision == CHAMPION:
        # Retrieval reads user vectors from the store: only the champion's vectors go there
        # (the towers of two versions live in different spaces). Serving checks the version.
        emb = bundle.embeddings
        write_embeddings(
            settings,
            "user",
            pd.DataFrame({"user_id": emb.user_ids, "vector": list(emb.users)}),
            version=outcome.version,
        )
        write_embeddings(
            settings,
            "item",
            pd.DataFrame({"item_id": emb.item_ids, "vector": list(emb.items)}),
            version=outcome.version,
        )
    return outcome.as_dict()


@flow(name="train_recsys", log_prints=True)
def train_recsys(
    as_of: dt.datetime | None = None, seed: int = 0, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Train, evaluate against popularity, register and gate the two-stage recommender."""

    from pipeline.deployments import yield_to_serving
    from pipeline.tracking import announce, start_run, verdict_state

    settings = Settings()
    yield_to_serving(settings.training.deployment_niceness)
    uri = tracking_uri or settings.mlflow_tracking_uri
    logger = get_run_logger()
    data = load_data(settings, as_of)
    checks = check_data(data)
    bundle = train_bundle(settings, data, seed)
    ev = evaluation_set(settings, data, seed)
    metrics = evaluate(settings, bundle, ev)
    logger.info(
        "NDCG@10 %.4f vs popularity %.4f (x%.2f)",
        metrics["ndcg_at_10"],
        metrics["baseline_popularity_ndcg_at_10"],
        metrics["ndcg_lift_over_popularity"],
    )
    with start_run(uri, settings.training.experiment, "train_recsys", {"model": "recsys"}):
        outcome = register(settings, data, bundle, ev, metrics, checks, uri)
    logger.info(
        "v%s: %s (%s)", outcome["version"], outcome["decision"], "; ".join(outcome["reasons"])
    )
    announce("recsys", outcome)
    # The flow run's state says refused or accepted; the caller still gets the outcome dict.
    return verdict_state(outcome)
