"""What a model server does for a request, without KServe: load a pinned registry version, decode
V1/V2 inputs, read features from the online store, score or recommend, and encode the answer."""

from __future__ import annotations

import json
import math
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
    online_features_many,
)
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from models.fraud_rules import rule_reasons
from models.recsys_bundle import RETRIEVAL_SCORE, RecsysBundle, load_bundle, recommend
from models.tree_scoring import CompiledScorer, compile_scorer
from serving.names import Product, version_label

FRAUD_SERVICE = "fraud_scoring"  # when a version's tags do not name its feature service
RECSYS_SERVICE = "recsys_ranking"
RECSYS_USER_VECTOR_SERVICE = "recsys_retrieval_user"
DEFAULT_K, MAX_K = 10, 100


class RequestError(ValueError):
    """A request the model cannot answer as sent (a 4xx); `fields` names the inputs at fault."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


def limit_native_threads() -> None:
    """One OpenMP/BLAS thread per server process: a request scores one row, and spreading one
    row over threads costs more than it saves (measured: gradient boosting on one row took
    12 ms p50 with OpenMP's default threads on a busy 2-core machine, 1.8 ms with one)."""
    # Load scikit-learn's OpenMP runtime first: threadpoolctl limits only the libraries
    # loaded when it is called. Missed, the recommender's ranker ran on OpenMP's default two
    # threads, and a call after 100 ms idle took 12 ms p50 instead of 1 ms (measured: the
    # sleeping worker thread's wake-up), the tail of every slate at a low request rate.
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One input of the contract (docs/inference-contract.md): a 1-D tensor of the batch."""

    name: str
    datatype: Literal["BYTES", "FP64", "INT64"]
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: Literal["BYTES", "FP64", "INT64"]


FRAUD_INPUTS = (
    InputSpec("card_id", "BYTES"),
    InputSpec("merchant_id", "BYTES"),
    InputSpec("amount", "FP64"),
    InputSpec("country", "BYTES"),
    InputSpec("device_id", "BYTES"),
    # Absent: the server's clock. The router sends the transaction's own time.
    InputSpec("event_timestamp", "FP64", required=False),
)
FRAUD_OUTPUTS = (
    OutputSpec("score", "FP64"),
    OutputSpec("decision", "BYTES"),
    OutputSpec("reasons", "BYTES"),
    OutputSpec("model_version", "BYTES"),
    OutputSpec("card_unknown", "INT64"),
)
RECSYS_INPUTS = (
    InputSpec("user_id", "BYTES"),
    InputSpec("k", "INT64", required=False, default=DEFAULT_K),
    InputSpec("event_timestamp", "FP64", required=False),
    InputSpec("genre_hint", "BYTES", required=False),
)
RECSYS_OUTPUTS = (
    OutputSpec("item_ids", "BYTES"),
    OutputSpec("scores", "BYTES"),
    OutputSpec("path", "BYTES"),
    OutputSpec("model_version", "BYTES"),
)
_NUMERIC_V2 = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32"}
_NUMERIC_V2 |= {"UINT16", "UINT8"}


def tensor_metadata(specs: Sequence[InputSpec | OutputSpec]) -> list[dict[str, Any]]:
    """V2 model-metadata tensors: every input and output is 1-D over the batch (`[-1]`)."""
    return [{"name": s.name, "datatype": s.datatype, "shape": [-1]} for s in specs]


def _convert(spec: InputSpec, value: Any, row: int) -> Any:
    """One value of an input in its contract type, or a RequestError naming the input."""
    if value is None:
        if spec.required:
            raise RequestError(f"input {spec.name!r} is null in row {row}", [spec.name])
        return spec.default
    if spec.datatype == "BYTES":
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, str):
            return value
        raise RequestError(
            f"input {spec.name!r} must be a string (BYTES), got {value!r} in row {row}",
            [spec.name],
        )
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise RequestError(
            f"input {spec.name!r} must be a number ({spec.datatype}), got {value!r} in row {row}",
            [spec.name],
        )
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"input {spec.name!r} must be finite, got {value!r}", [spec.name])
    if spec.datatype == "INT64":
        if number != int(number):
            raise RequestError(
                f"input {spec.name!r} must be an integer, got {value!r} in row {row}", [spec.name]
            )
        return int(number)
    return number


def rows_from_v1(body: Any, specs: Sequence[InputSpec]) -> list[dict[str, Any]]:
    """Rows from a V1 body ``{"instances": [{input: value, ...}, ...]}``."""
    if isinstance(body, bytes | str):
        # KServe passes the body on undecoded when the client did not say it is JSON.
        try:
            body = json.loads(body)
        except ValueError as err:
            raise RequestError(
                f'the body is not JSON ({err}); a V1 request is {{"instances": [...]}}',
                ["instances"],
            ) from err
    instances = body.get("instances") if isinstance(body, Mapping) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            'a V1 request is {"instances": [{...}, ...]} with at least one instance',
            ["instances"],
        )
    rows = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            raise RequestError(f"instances[{i}] must be an object of named inputs", ["instances"])
        missing = [s.name for s in specs if s.required and instance.get(s.name) is None]
        if missing:
            raise RequestError(f"instances[{i}] lacks input(s) {', '.join(missing)}", missing)
        rows.append({s.name: _convert(s, instance.get(s.name), i) for s in specs})
    return rows


def rows_from_v2(inputs: Sequence[Any], specs: Sequence[InputSpec]) -> list[dict[str, Any]]:
    """Rows from V2 input tensors (objects with name, datatype, shape, data: KServe's InferInput).

    Every input is a 1-D tensor of the batch; numbers may come in any numeric datatype.
    """
    by_name = {getattr(t, "name", None): t for t in inputs}
    missing = [s.name for s in specs if s.required and s.name not in by_name]
    if missing:
        raise RequestError(f"the request lacks input(s) {', '.join(missing)}", missing)
    columns: dict[str, list[Any]] = {}
    for spec in specs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            continue
        datatype = str(tensor.datatype).upper()
        if spec.datatype == "BYTES" and datatype != "BYTES":
            raise RequestError(f"input {spec.name!r} must be BYTES, not {datatype}", [spec.name])
        if spec.datatype != "BYTES" and datatype not in _NUMERIC_V2:
            raise RequestError(
                f"input {spec.name!r} must be {spec.datatype}, not {datatype}", [spec.name]
            )
        columns[spec.name] = _tensor_values(tensor, spec.name)
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        shapes = ", ".join(f"{name}: {len(v)}" for name, v in columns.items())
        raise RequestError(
            f"every input must be a 1-D tensor of the same non-zero length ({shapes})",
            list(columns),
        )
    n = sizes.pop()
    rows = []
    for i in range(n):
        rows.append(
            {
                s.name: _convert(s, columns[s.name][i], i) if s.name in columns else s.default
                for s in specs
            }
        )
    return rows


def _tensor_values(tensor: Any, name: str) -> list[Any]:
    shape = list(tensor.shape or [])
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"input {name!r} must have shape [n], got {shape}", [name])
    data = tensor.data
    if not isinstance(data, list):
        # gRPC raw contents or binary REST data: KServe decodes those itself.
        data = tensor.as_numpy().reshape(-1).tolist()
    flat = [v for item in data for v in item] if data and isinstance(data[0], list) else data
    expected = shape[0] if shape else len(flat)
    if len(flat) != expected:
        raise RequestError(f"input {name!r} has {len(flat)} values but shape {shape}", [name])
    return list(flat)


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FraudVersion:
    """One registered fraud scorer, ready to score: the estimator and what its tags say."""

    version: str
    estimator: Any  # calibrated sklearn classifier: predict_proba over `features`
    features: tuple[str, ...]
    feature_service: str
    threshold: float
    tags: Mapping[str, str] = field(default_factory=dict)
    # The same trees and calibration as plain Python (models.tree_scoring), checked against
    # the estimator when loaded; None when the estimator is of a shape it does not copy.
    compiled: CompiledScorer | None = None
    compiled_refused: str = ""

    @property
    def model_version(self) -> str:
        return version_label("fraud", self.version)

    @property
    def scoring_path(self) -> str:
        """How this version scores: the compiled trees, or scikit-learn (and why)."""
        if self.compiled is not None:
            return "compiled trees (checked against scikit-learn at load)"
        return f"scikit-learn ({self.compiled_refused})"


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


def load_fraud_version(settings: Settings, version: str, tracking_uri: str) -> FraudVersion:
    """Download `models:/<fraud model>/<version>` and read its threshold and features from its
    version tags (written by the training flow)."""
    name = settings.training.model_name("fraud")
    registry = ModelRegistry(tracking_uri)
    tags = registry.version_tags(name, version)
    estimator = registry.load_sklearn(name, version)
    trained_on = [str(f) for f in getattr(estimator, "feature_names_in_", [])]
    tagged = [f for f in tags.get("features", "").split(",") if f]
    if tagged and trained_on and tagged != trained_on:
        raise ValueError(
            f"{name} v{version}: the 'features' tag disagrees with the features the estimator "
            f"was fitted on ({tagged} vs {trained_on})"
        )
    # score_fraud passes values in exactly this order (see models/__init__.py on the warning).
    features = tuple(trained_on or tagged)
    if not features:
        raise ValueError(f"{name} v{version} names no features (tag 'features' is empty)")
    if "threshold" not in tags:
        raise ValueError(f"{name} v{version} has no 'threshold' tag: it was not trained here")
    compiled, refused = compile_scorer(estimator)
    return FraudVersion(
        version=str(version),
        estimator=estimator,
        features=features,
        feature_service=tags.get("feature_service", FRAUD_SERVICE),
        threshold=float(tags["threshold"]),
        tags=tags,
        compiled=compiled,
        compiled_refused=refused,
    )


def load_recsys_version(settings: Settings, version: str, tracking_uri: str) -> RecsysVersion:
    """Download `models:/<recsys model>/<version>`: ranker, towers and fallbacks."""
    name = settings.training.model_name("recsys")
    registry = ModelRegistry(tracking_uri)
    tags = registry.version_tags(name, version)
    bundle = load_bundle(registry, name, version)
    servers = settings.model_servers
    return RecsysVersion(
        version=str(version),
        bundle=bundle,
        user_index=bundle.embeddings.user_index(),
        feature_service=tags.get("feature_service", RECSYS_SERVICE),
        n_candidates=settings.training.recsys.candidates,
        tags=tags,
        feature_cache=OnlineFeatureCache(servers.cached_views, servers.feature_cache_ttl_s)
        if servers.feature_cache_ttl_s > 0 and servers.cached_views
        else None,
    )


def champion_version(settings: Settings, product: Product, tracking_uri: str) -> str:
    """The version @champion points at now (resolved once: a server then serves it pinned)."""
    from mlsd.registry import CHAMPION

    name = settings.training.model_name(product)
    version = ModelRegistry(tracking_uri).version_of(name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no @{CHAMPION}: train one or name a version")
    return version


def warm_up_fraud(served: FraudVersion, settings: Settings) -> None:
    """Score one made-up transaction, so the first real request does not pay for opening the
    feature store (1-2 s) and the model's first call; a store that cannot answer fails here."""
    row = {
        "card_id": "warm-up",
        "merchant_id": "warm-up",
        "amount": 1.0,
        "country": "warm-up",
        "device_id": "warm-up",
        "event_timestamp": None,
    }
    score_fraud(served, fraud_features([row], served.feature_service, settings))


def warm_up_recsys(served: RecsysVersion, settings: Settings) -> None:
    """Recommend once for a user the version knows (both stages, all lookups), for the same
    reason as `warm_up_fraud`."""
    user = next(iter(served.user_index), "warm-up")
    recommend_for(served, {"user_id": user, "k": DEFAULT_K}, settings)


# --- fraud ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FraudPrediction:
    score: float
    decision: Literal["block", "allow"]
    reasons: tuple[str, ...]
    model_version: str
    card_unknown: int
    features: dict[str, Any]  # what the model saw, plus the store's unknown-entity markers


def fraud_features(
    rows: Sequence[Mapping[str, Any]], feature_service: str, settings: Settings
) -> list[dict[str, Any]]:
    """Online features of each transaction: stored card and merchant features, and the
    on-demand ones computed from the request (amount, country, device, time)."""
    entities = [{"card_id": r["card_id"], "merchant_id": r["merchant_id"]} for r in rows]
    requests = [
        {
            "amount": r["amount"],
            "country": r["country"],
            "device_id": r["device_id"],
            "event_epoch_s": r["event_timestamp"]
            if r.get("event_timestamp") is not None
            else time.time(),
        }
        for r in rows
    ]
    try:
        return online_features_many(entities, requests, feature_service, settings=settings)
    except FeatureRequestError as err:
        raise RequestError(str(err), err.fields) from err


def score_fraud(
    served: FraudVersion, features: Sequence[Mapping[str, Any]]
) -> list[FraudPrediction]:
    """Calibrated fraud probability per transaction, the decision at the version's cost-model
    threshold, and the rule reason codes that fire (an analyst's first question)."""
    # Values in the order the estimator was fitted with (checked when it was loaded). One row
    # through scikit-learn costs about 1 ms of input checks and per-tree calls; the compiled
    # copy of the same trees takes about 20 us (models.tree_scoring).
    values = [[float(row[name]) for name in served.features] for row in features]
    if served.compiled is not None:
        scores = [served.compiled.score_row(v) for v in values]
    else:
        scores = served.estimator.predict_proba(np.array(values, dtype=np.float64))[:, 1].tolist()
    out = []
    for row, score in zip(features, scores, strict=True):
        used = {name: _plain(row[name]) for name in served.features}
        used.update({k: int(bool(v)) for k, v in row.items() if k.endswith("_unknown")})
        out.append(
            FraudPrediction(
                score=float(score),
                decision="block" if score >= served.threshold else "allow",
                reasons=tuple(rule_reasons(row)),
                model_version=served.model_version,
                card_unknown=int(bool(row.get("card_unknown", False))),
                features=used,
            )
        )
    return out


def fraud_v1_predictions(predictions: Sequence[FraudPrediction]) -> dict[str, Any]:
    """V1 body: per prediction the V2 outputs (same names and encodings) plus `features`."""
    return {
        "predictions": [
            {
                "score": p.score,
                "decision": p.decision,
                "reasons": ",".join(p.reasons),
                "model_version": p.model_version,
                "card_unknown": p.card_unknown,
                "features": p.features,
            }
            for p in predictions
        ]
    }


def fraud_v2_outputs(predictions: Sequence[FraudPrediction]) -> list[tuple[OutputSpec, list[Any]]]:
    """V2 output tensors (one value per transaction), in contract order."""
    columns: dict[str, list[Any]] = {
        "score": [p.score for p in predictions],
        "decision": [p.decision for p in predictions],
        "reasons": [",".join(p.reasons) for p in predictions],
        "model_version": [p.model_version for p in predictions],
        "card_unknown": [p.card_unknown for p in predictions],
    }
    return [(spec, columns[spec.name]) for spec in FRAUD_OUTPUTS]


# --- recsys ---------------------------------------------------------------------------------


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
            used[item] = {name: _plain(columns[name][i]) for name in names}
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


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy types and NaN do not survive JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
