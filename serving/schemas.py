"""The router's request and response bodies: what the public and admin APIs accept (strictly:
unknown fields, wrong types, NaN and negative amounts are 4xx naming the field) and return."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from features.catalog import GENRES
from serving.names import Product
from serving.traffic import Arm, ExperimentMetric

# Ids as the lab's worlds write them (card_000123, u_42, dev-7f3a...): printable, no spaces.
EntityId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
]
RequestId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
ExperimentName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _utc_in_range(value: dt.datetime) -> dt.datetime:
    # A naive time is taken as UTC (the lab's clock); anything outside this century is a bug
    # upstream (a millisecond epoch read as seconds), not a transaction.
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("must be between 2000-01-01 and 2100-01-01 (UTC)")
    return value


Timestamp = Annotated[
    dt.datetime,
    AfterValidator(_utc_in_range),
    Field(description="ISO 8601 (naive: UTC) or epoch seconds."),
]


def _known_genre(value: str | None) -> str | None:
    if value is not None and value not in GENRES:
        raise ValueError(f"must be one of {', '.join(GENRES)}")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- public API ------------------------------------------------------------------------------


class Transaction(_Body):
    """A card transaction to score."""

    card_id: EntityId = Field(description="The card (the entity the traffic split hashes).")
    merchant_id: EntityId
    amount: float = Field(
        strict=True,
        allow_inf_nan=False,
        ge=0,
        le=10_000_000,
        description="Amount in USD: a finite number, not negative.",
    )
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")
    device_id: EntityId
    timestamp: Timestamp


FraudDecision = Literal["block", "allow"]
RecsPath = Literal["model", "popularity"]


class FraudScore(BaseModel):
    """The router's answer to a transaction."""

    request_id: str = Field(description="Quote it in /v1/feedback; also the X-Request-ID header.")
    score: float = Field(description="Fraud probability (model) or rule score (degraded).")
    decision: FraudDecision
    reasons: list[str] = Field(description="Reason codes: the rules that fire.")
    model_version: str = Field(description='What answered: "fraud/3", "rules", "rules:request".')
    arm: Arm
    experiment: str | None = Field(description="The split that assigned the arm, if any.")
    degraded: bool = Field(description="True when a fallback answered instead of the arm's model.")
    degraded_reason: str | None
    cold_start: bool = Field(description="The feature store knew nothing of the card.")


class RecsRequest(_Body):
    """Who to recommend to, how many, and the context."""

    user_id: EntityId = Field(description="The listener (the entity the traffic split hashes).")
    k: int = Field(10, strict=True, ge=1, le=100, description="Items wanted.")
    timestamp: Timestamp | None = Field(None, description="Time of the request; default: now.")
    genre_hint: Annotated[str | None, AfterValidator(_known_genre)] = Field(
        None, description=f"Optional genre to favour: one of {', '.join(GENRES)}."
    )


class RecItem(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    """The router's answer to a recommendation request."""

    request_id: str
    items: list[RecItem]
    model_version: str = Field(description='What answered: "recsys/1" or "popularity".')
    path: RecsPath = Field(description="model, or popularity (cold start or fallback).")
    arm: Arm
    experiment: str | None
    degraded: bool
    degraded_reason: str | None


class FeedbackRequest(_Body):
    """What happened after a prediction: a fraud label, or an item the listener engaged with."""

    request_id: RequestId = Field(description="The request_id of the prediction.")
    label: int | None = Field(
        None, strict=True, ge=0, le=1, description="Fraud: 1 fraud (chargeback), 0 legitimate."
    )
    item_id: EntityId | None = Field(None, description="Recs: the item clicked or played.")
    event: Literal["click", "play"] | None = Field(None, description="Recs: default play.")

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        if (self.label is None) == (self.item_id is None):
            raise ValueError("give either label (fraud) or item_id (recs), not both or neither")
        if self.event is not None and self.item_id is None:
            raise ValueError("event goes with item_id")
        return self

    @property
    def product(self) -> Product:
        return "fraud" if self.label is not None else "recsys"


class FeedbackAck(BaseModel):
    request_id: str
    product: Product
    joined: bool


class ErrorBody(BaseModel):
    """A 4xx/5xx answer that is not a validation error."""

    detail: str


# --- admin API -------------------------------------------------------------------------------


class SplitRequest(_Body):
    """An A/B experiment: a share of entities (by stable hash) sees the challenger."""

    experiment: ExperimentName = Field(description="Salts the hash: a new name reshuffles.")
    metric: ExperimentMetric = Field(description="The metric the experiment is judged by.")
    challenger_percent: float = Field(gt=0, lt=100, allow_inf_nan=False)
    version: int | None = Field(
        None, ge=1, description="Challenger version; default: the registry's @challenger."
    )


class ShadowRequest(_Body):
    version: int | None = Field(
        None, ge=1, description="Version to shadow; default: the registry's @challenger."
    )
    percent: float = Field(
        100.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Share of entities (sticky, by hash) whose requests are copied.",
    )


class CanaryRequest(_Body):
    percent: float = Field(gt=0, le=100, allow_inf_nan=False, description="First ramp step.")
    version: int | None = Field(
        None, ge=1, description="Canary version; default: the registry's @challenger."
    )


class CanaryPercentRequest(_Body):
    percent: float = Field(gt=0, le=100, allow_inf_nan=False)


class ReasonRequest(_Body):
    reason: str = Field(
        "", max_length=300, description="Kept in the routing history and the registry."
    )


class RollbackRequest(ReasonRequest):
    challenger: int | None = Field(
        None,
        ge=1,
        description=(
            "Only withdraw this challenger from traffic (409 when it is not taking traffic); "
            "never restore an older champion. The rollout controller's abort uses it."
        ),
    )


class AdminAnswer(BaseModel):
    """The product's routing after an admin call, and what the call did."""

    product: Product
    action: str
    routing: dict[str, Any]
