"""What the prediction log keeps: one record per answer (served or shadow), the record read
back with its label, and the feedback that brings a label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from serving.names import Product

Role = Literal["served", "shadow"]
JoinResult = Literal["joined", "unknown_request", "wrong_product"]


@dataclass(frozen=True)
class PredictionRecord:
    """One answer to one request by one arm. A shadowed request has two: role served and shadow."""

    request_id: str
    role: Role
    at: float  # epoch seconds (UTC) when the request arrived
    product: Product
    entity: str  # card_id or user_id: the key the split hashes
    arm: str  # champion | challenger
    experiment: str | None  # the split (A/B experiment or canary) that assigned the arm
    model_version: str  # the version the arm routes to ("fraud/4"), "" when none is known
    answered_by: str  # what gave the answer: "fraud/4", "fraud/3", "rules", "popularity", ...
    inputs: dict[str, Any]  # the request as received
    features: dict[str, Any] | None  # features used, where the router has them
    output: dict[str, Any]  # the answer as returned
    score: float | None  # fraud: the score; recs: the top item's score
    decision: str | None  # fraud: block | allow; recs: recommend
    latency_ms: float
    degraded: bool
    degraded_reason: str | None
    error: str | None  # why the arm's own model did not answer (None: it did)


@dataclass(frozen=True)
class LoggedPrediction(PredictionRecord):
    """A logged prediction with its label, when one has arrived. Fraud: 1 fraud, 0 legitimate.
    Recs: 1 when the listener clicked or played one of the recommended items, else 0; and
    `hits`, how many of them (the slate's items engaged with, for click-through per item)."""

    label: int | None = None
    hits: int | None = None  # recs: distinct recommended items clicked or played


@dataclass(frozen=True)
class Feedback:
    """What happened after a prediction: a fraud label, or an item the listener engaged with."""

    request_id: str
    product: Product
    at: float
    label: int | None = None  # fraud
    item_id: str | None = None  # recs
    event: str | None = None  # recs: click | play
