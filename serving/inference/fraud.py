"""The fraud model of a model server, without KServe: load a pinned registry version, read its
features from the online store, score, and encode the answer.

A version is read in a child process (`load_fraud_version`, `serving.inference.startup.
in_child`): MLflow, scikit-learn and skops read the estimator and check its ONNX graph there,
and the server keeps the graph and its tags. Measured in a lab on 2 cores: a fraud server's PSS
296-310 -> 199-207 MB, for as long as it runs. The cost is the child's start, mostly its imports:
a fresh process took 3.8-4.5 s to import what reads a version (9.1-9.3 s while MLflow's client
also loaded Feast through its request-header plugin, which mlsd.registry now leaves out); in a
demo a version took about 10 s to load, against 0.2 s in a server that has the libraries
already, and a server starts 5-10 s later. A rollout does not wait for it: the
shadow server, at a lowered CPU priority, reads versions in its own process (a child would
inherit the priority; see serving.model_server.entry), and the router has the serving server
load the challenger while the shadow runs (serving.router.servers.ModelServers.prefetch)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from features.store import (
    FeatureRequestError,
    online_features_many,
)
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from models.fraud_onnx import OnnxScorer, fraud_scorer, load_fraud_model, onnx_session
from models.fraud_rules import rule_reasons
from serving.inference.codec import FRAUD_OUTPUTS, OutputSpec, RequestError, json_scalar
from serving.inference.startup import champion_version, in_child
from serving.names import version_label

FRAUD_SERVICE = "fraud_scoring"  # when a version's tags do not name its feature service
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FraudVersion:
    """One registered fraud scorer, ready to score: the estimator and what its tags say."""

    version: str
    estimator: Any  # calibrated sklearn classifier over `features`; None when `compiled` scores
    features: tuple[str, ...]
    feature_service: str
    threshold: float
    tags: Mapping[str, str] = field(default_factory=dict)
    # The same trees and calibration as an ONNX graph run by onnxruntime (models.fraud_onnx),
    # checked against the estimator when loaded; None when the check or the conversion failed.
    compiled: OnnxScorer | None = None
    compiled_refused: str = ""

    @property
    def model_version(self) -> str:
        return version_label("fraud", self.version)

    @property
    def scoring_path(self) -> str:
        """How this version scores: its ONNX graph, or scikit-learn (and why)."""
        if self.compiled is not None:
            return "onnxruntime (checked against scikit-learn at load)"
        return f"scikit-learn ({self.compiled_refused})"


@dataclass(frozen=True)
class FraudParts:
    """A version as its tags and its checked graph describe it: all of it but the estimator."""

    version: str
    features: tuple[str, ...]
    feature_service: str
    threshold: float
    tags: dict[str, str]
    graph: bytes | None  # the ONNX graph checked against the estimator; None: sklearn scores
    note: str  # what was done to the graph, or why it was refused

    def served(self, estimator: Any = None, compiled: OnnxScorer | None = None) -> FraudVersion:
        """The version ready to score: with the scorer of its graph (`compiled`, or one made
        from the graph's bytes), else with `estimator`."""
        if compiled is None and self.graph is not None:
            compiled = onnx_session(self.graph)
        return FraudVersion(
            version=self.version,
            estimator=estimator,
            features=self.features,
            feature_service=self.feature_service,
            threshold=self.threshold,
            tags=self.tags,
            compiled=compiled,
            compiled_refused="" if compiled is not None else self.note,
        )


def load_fraud_version(
    settings: Settings, version: str | None, tracking_uri: str, isolated: bool = True
) -> FraudVersion:
    """Download `models:/<fraud model>/<version>` (None: the version @champion points at), read
    its threshold and features from its version tags (written by the training flow), and score
    with its ONNX graph where the graph stands in for the estimator.

    `isolated`: the lookup, the download, the estimator and the check of its graph happen in a
    child process that exits after, so this process never imports MLflow, scikit-learn and
    skops (see the module's docstring for the figures); a version whose graph is refused is then
    read again here, to score with scikit-learn. Else all of it happens here."""
    name = settings.training.model_name("fraud")
    if isolated:
        # At the flows' priority: batch work beside a server that answers within 50 ms.
        nice = settings.prefect.flows_nice
        parts = in_child(_parts_in_child, settings, version, tracking_uri, nice=nice)
        if parts.graph is not None:
            if parts.note:
                logger.info("%s v%s: ONNX graph %s", name, parts.version, parts.note)
            return parts.served()
        version = parts.version  # scikit-learn scores it: read its estimator here after all
    parts, estimator, compiled = _read_version(settings, version, tracking_uri)
    if compiled is None:
        logger.warning("%s v%s scores with scikit-learn: %s", name, parts.version, parts.note)
        return parts.served(estimator)
    if parts.note:
        logger.info("%s v%s: ONNX graph %s", name, parts.version, parts.note)
    return parts.served(compiled=compiled)


def _parts_in_child(settings: Settings, version: str | None, tracking_uri: str) -> FraudParts:
    return _read_version(settings, version, tracking_uri)[0]


def _read_version(
    settings: Settings, version: str | None, tracking_uri: str
) -> tuple[FraudParts, Any, OnnxScorer | None]:
    """The version's parts, its estimator and the checked scorer of its graph (None: refused),
    in this process; `version` None is the one @champion points at. A ValueError names what is
    missing or contradictory in its tags."""
    name = settings.training.model_name("fraud")
    if version is None:
        version = champion_version(settings, "fraud", tracking_uri)
    registry = ModelRegistry(tracking_uri)
    tags = registry.version_tags(name, version)
    registered = load_fraud_model(registry, name, version)
    estimator = registered.estimator
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
    compiled, note = fraud_scorer(estimator, registered.graph)
    parts = FraudParts(
        version=str(version),
        features=features,
        feature_service=tags.get("feature_service", FRAUD_SERVICE),
        threshold=float(tags["threshold"]),
        tags=dict(tags),
        graph=compiled.graph if compiled is not None else None,
        note=note,
    )
    return parts, estimator, compiled


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
    # through scikit-learn costs about 1 ms of input checks and per-tree calls; onnxruntime
    # runs the same trees in about 6 us (models.fraud_onnx).
    values = [[float(row[name]) for name in served.features] for row in features]
    if served.compiled is not None:
        scores = [served.compiled.score_row(v) for v in values]
    else:
        scores = served.estimator.predict_proba(np.array(values, dtype=np.float64))[:, 1].tolist()
    out = []
    for row, score in zip(features, scores, strict=True):
        used = {name: json_scalar(row[name]) for name in served.features}
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
        "features": [json.dumps(p.features, separators=(",", ":")) for p in predictions],
    }
    return [(spec, columns[spec.name]) for spec in FRAUD_OUTPUTS]
