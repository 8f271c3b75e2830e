"""The recommender of a model server, without KServe: load a pinned registry version, find the
user's query vector, retrieve and rank with features from the online store, encode the slate."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from features.store import (
    FeatureRequestError,
    OnlineFeatureCache,
    online_feature_columns,
    online_features,
)
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from models.recsys_bundle import RETRIEVAL_SCORE, RecsysBundle, load_bundle, recommend
from serving.inference.codec import (
    DEFAULT_K,
    MAX_K,
    RECSYS_OUTPUTS,
    OutputSpec,
    RequestError,
    json_scalar,
)
from serving.inference.startup import champion_version, in_child
from serving.names import version_label

RECSYS_SERVICE = "recsys_ranking"
RECSYS_USER_VECTOR_SERVICE = "recsys_retrieval_user"


@dataclass(frozen=True)
class RecsysVersion:
    """One registered recommender, ready to recommend."""

    version: str
    bundle: RecsysBundle
    user_index: dict[str, int]
    feature_service: str
    n_candidates: int
    tags: Mapping[str, str] = field(default_factory=dict)
    # Recently read item rows (settings.model_servers.cached_views); None: read every time.
    feature_cache: OnlineFeatureCache | None = None

    @property
    def model_version(self) -> str:
        return version_label("recsys", self.version)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.bundle.ranker_features)


def load_recsys_version(
    settings: Settings, version: str | None, tracking_uri: str, isolated: bool = True
) -> RecsysVersion:
    """Download `models:/<recsys model>/<version>` (None: the version @champion points at):
    ranker, towers and fallbacks.

    `isolated`: read in a child process that exits after, as a fraud version is (serving.
    inference.fraud): the server keeps scikit-learn for its ranker, not MLflow, Feast and skops
    (measured in a lab on 2 cores: the recommender's server PSS 270-283 -> 241 MB)."""
    args = (settings, version, tracking_uri)
    version, bundle, tags = (
        in_child(_bundle_in_child, *args, nice=settings.prefect.flows_nice)  # as fraud's
        if isolated
        else _bundle_in_child(*args)
    )
    servers = settings.model_servers
    return RecsysVersion(
        version=version,
        bundle=bundle,
        user_index=bundle.embeddings.user_index(),
        feature_service=tags.get("feature_service", RECSYS_SERVICE),
        n_candidates=settings.training.recsys.candidates,
        tags=tags,
        feature_cache=OnlineFeatureCache(servers.cached_views, servers.feature_cache_ttl_s)
        if servers.feature_cache_ttl_s > 0 and servers.cached_views
        else None,
    )


def _bundle_in_child(
    settings: Settings, version: str | None, tracking_uri: str
) -> tuple[str, RecsysBundle, dict[str, str]]:
    name = settings.training.model_name("recsys")
    if version is None:
        version = champion_version(settings, "recsys", tracking_uri)
    registry = ModelRegistry(tracking_uri)
    return (
        str(version),
        load_bundle(registry, name, version),
        dict(registry.version_tags(name, version)),
    )


def warm_up_recsys(served: RecsysVersion, settings: Settings) -> None:
    """Recommend once for a user the version knows (both stages, all lookups), for the same
    reason as `warm_up_fraud`."""
    user = next(iter(served.user_index), "warm-up")
    recommend_for(served, {"user_id": user, "k": DEFAULT_K}, settings)


@dataclass(frozen=True)
class Recommendation:
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    path: Literal["model", "popularity"]
    model_version: str
    # What the ranker saw for each returned item (model path only).
    features: dict[str, dict[str, Any]] = field(default_factory=dict)


def query_vector(served: RecsysVersion, user_id: str, settings: Settings) -> np.ndarray | None:
    """The user's retrieval query: the store's vector when this version wrote it, else the
    bundle's own, else None (a user neither knows: cold start).

    Only a vector of the *served* version will do: each training run fits its own towers, and
    two versions' user and item vectors live in different spaces, so a vector written by
    another version (the store holds only the champion's) would score this version's items
    with nonsense. The store's copy matters for users the bundle lacks (vectors written after
    training, e.g. folded in for new listeners).
    """
    stored = online_features(
        {"user_id": user_id}, None, RECSYS_USER_VECTOR_SERVICE, settings=settings
    )
    vector = stored.get("user_vector")
    if (
        vector is not None
        and len(vector)
        and str(stored.get("user_embedding_version", "")) == served.version
    ):
        candidate = np.asarray(vector, dtype=np.float64)
        if candidate.shape == (served.bundle.embeddings.items.shape[1],):
            return candidate
    row = served.user_index.get(user_id)
    return None if row is None else served.bundle.embeddings.users[row]


def ranking_lookup(
    feature_service: str,
    event_epoch_s: float,
    settings: Settings,
    cache: OnlineFeatureCache | None = None,
) -> Callable[[str, Sequence[str]], dict[str, list[Any]]]:
    """The recommender's feature lookup for all candidates, as columns: the user's row once,
    the items' rows from `cache` where it has them. No data frame: building one cost more
    than the ranker (measured: about 1.5 ms of a 6 ms recommendation on 110 candidates)."""

    def lookup(user_id: str, items: Sequence[str]) -> dict[str, list[Any]]:
        return online_feature_columns(
            [{"user_id": user_id, "item_id": item} for item in items],
            {"event_epoch_s": event_epoch_s},
            feature_service,
            settings=settings,
            cache=cache,
        )

    return lookup


def recommend_for(
    served: RecsysVersion, row: Mapping[str, Any], settings: Settings
) -> Recommendation:
    """Top-k for one request: retrieval, then the ranker over online features; a user no
    tower knows gets the popularity list (path `popularity`)."""
    user_id = str(row["user_id"])
    k = int(row["k"]) if row.get("k") is not None else DEFAULT_K
    if not 1 <= k <= MAX_K:
        raise RequestError(f"input 'k' must be between 1 and {MAX_K}, got {k}", ["k"])
    now = row.get("event_timestamp")
    event_epoch_s = float(now) if now is not None else time.time()
    seen: dict[str, Any] = {}
    lookup = ranking_lookup(served.feature_service, event_epoch_s, settings, served.feature_cache)

    def remembering_lookup(user: str, items: Sequence[str]) -> dict[str, list[Any]]:
        # Kept to report what the ranker saw for the items it returns.
        seen["items"], seen["columns"] = list(items), lookup(user, items)
        return seen["columns"]

    try:
        items, scores, path = recommend(
            served.bundle,
            user_id,
            k,
            served.n_candidates,
            remembering_lookup,
            served.user_index,
            user_vector=query_vector(served, user_id, settings),
            genre_hint=row.get("genre_hint") or None,
        )
    except FeatureRequestError as err:
        raise RequestError(str(err), err.fields) from err
    used: dict[str, dict[str, Any]] = {}
    if path == "model":
        position = {item: i for i, item in enumerate(seen["items"])}
        names = [n for n in served.bundle.ranker_features if n != RETRIEVAL_SCORE]
        columns = seen["columns"]
        for item in items:
            i = position[item]
            used[item] = {name: json_scalar(columns[name][i]) for name in names}
    return Recommendation(
        item_ids=tuple(items),
        scores=tuple(float(s) for s in scores),
        path="model" if path == "model" else "popularity",
        model_version=served.model_version,
        features=used,
    )


def recsys_v1_predictions(recommendations: Sequence[Recommendation]) -> dict[str, Any]:
    """V1 body: per request the V2 outputs (same names and encodings) plus `features` per item."""
    return {
        "predictions": [
            {
                "item_ids": ",".join(r.item_ids),
                "scores": _joined(r.scores),
                "path": r.path,
                "model_version": r.model_version,
                "features": r.features,
            }
            for r in recommendations
        ]
    }


def recsys_v2_outputs(
    recommendations: Sequence[Recommendation],
) -> list[tuple[OutputSpec, list[Any]]]:
    columns: dict[str, list[Any]] = {
        "item_ids": [",".join(r.item_ids) for r in recommendations],
        "scores": [_joined(r.scores) for r in recommendations],
        "path": [r.path for r in recommendations],
        "model_version": [r.model_version for r in recommendations],
    }
    return [(spec, columns[spec.name]) for spec in RECSYS_OUTPUTS]


def _joined(scores: Sequence[float]) -> str:
    return ",".join(f"{s:.6g}" for s in scores)
