"""The router's request and response bodies: what the public and admin APIs accept (strictly:
unknown fields, wrong types, NaN and negative amounts are 4xx naming the field) and return.

The published schema states every constraint a validator enforces (enums, bounds, patterns, and
the conditional fields of feedback as a `oneOf`), so a client generated from it never sends what
the router refuses; `tests/integration/test_router_schema.py` checks that with schemathesis."""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from features.catalog import GENRES
from serving.names import Product
from serving.traffic import Arm, ExperimentMetric

# Ids as the lab's worlds write them (card_000123, m_00042, dev_000123_1, u_000001, i_000001):
# printable, no spaces. Other formats are accepted (a real upstream has its own); an id the
# feature store does not know gets the cold-start path, and the answer says so.
EntityId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
]
RequestId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{32}$"),
    Field(examples=["3f2b8c1e9a7d4f6b8e0c1a2b3c4d5e6f"]),
]
ExperimentName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
# A time is an ISO 8601 string of this century (naive: UTC) or epoch seconds in it: anything
# else is a bug upstream (a millisecond epoch read as seconds), not a transaction. The regex is
# the schema's pattern too, so both say the same: real calendar days (29 February aside),
# optional fraction and offset.
_DAY = r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
ISO_TIME = (
    rf"^20[0-9]{{2}}-{_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_ISO_TIME = re.compile(ISO_TIME)
EPOCH_MIN, EPOCH_MAX = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01 (UTC)


def _time_as_written(value: Any) -> Any:
    if isinstance(value, str):
        if not _ISO_TIME.match(value):
            raise ValueError(
                "must be ISO 8601 like 2026-01-20T14:03:00Z (a year 2000-2099, optional offset; "
                "naive is UTC) or epoch seconds"
            )
    elif isinstance(value, bool) or not isinstance(value, int | float | dt.datetime):
        raise ValueError("must be an ISO 8601 string or epoch seconds")
    elif not isinstance(value, dt.datetime) and not EPOCH_MIN <= value < EPOCH_MAX:
        raise ValueError(f"epoch seconds must be in [{EPOCH_MIN}, {EPOCH_MAX}): years 2000-2099")
    return value


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_time_as_written),
    AfterValidator(_as_utc),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": ISO_TIME},
                {"type": "number", "minimum": EPOCH_MIN, "exclusiveMaximum": EPOCH_MAX},
            ],
            "description": "ISO 8601 of 2000-2099 (naive: UTC) or epoch seconds.",
        }
    ),
]


def _whole_number(value: Any) -> Any:
    # JSON Schema's integer includes 14.0; a bool or a string is not one.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
# A registry version. The schema is given: inside `| None` pydantic would publish the
# bound as an unknown "ge" keyword instead of "minimum".
# At most a 32-bit integer: the registry keeps versions in an INTEGER column, and MLflow's server
# answered a larger one with a 500 (a 502 here), which is the client's mistake, not the platform's.
MAX_VERSION = 2**31 - 1
Version = Annotated[
    WholeNumber,
    Field(ge=1, le=MAX_VERSION),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_VERSION, "examples": [3]}),
]


# An enum, so the schema lists the genres the validator accepts.
Genre = StrEnum("Genre", {g: g for g in GENRES})  # type: ignore[misc]


def _no_null_defaults(schema: dict[str, Any]) -> None:
    # An optional field typed without None (absent is fine, null is refused): its default of
    # None is no value a client may send, so the schema does not show it.
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)


# --- public API ------------------------------------------------------------------------------


class Transaction(_Body):
    """A card transaction to score."""

    card_id: EntityId = Field(
        description="The card (the entity the traffic split hashes). The lab's cards are "
        "card_ plus six digits; an unknown card is scored cold (cold_start true).",
        examples=["card_000123"],
    )
    merchant_id: EntityId = Field(description="The merchant (lab: m_00042).", examples=["m_00042"])
    amount: float = Field(
        strict=True,
        allow_inf_nan=False,
        ge=0,
        le=10_000_000,
        description="Amount in USD: a finite number, not negative.",
        examples=[42.5],
    )
    country: str = Field(
        pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.", examples=["US"]
    )
    device_id: EntityId = Field(
        description="The device (lab: dev_000123_1).", examples=["dev_000123_1"]
    )
    timestamp: Timestamp = Field(examples=["2026-01-20T14:03:00Z"])


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

    user_id: EntityId = Field(
        description="The listener (the entity the traffic split hashes). The lab's listeners "
        "are u_ plus six digits; an unknown one gets the cold-start path, and the answer's "
        "path_reason says so.",
        examples=["u_000001"],
    )
    k: WholeNumber = Field(10, ge=1, le=100, description="Items wanted.")
    timestamp: Timestamp | None = Field(None, description="Time of the request; default: now.")
    # Absent: no hint; null is refused like any other non-genre (so the schema has no null).
    genre_hint: Genre = Field(  # type: ignore[assignment]
        None,
        description="Optional genre to favour: its new releases join a known listener's "
        "candidates first, lead an unknown listener's slate, and lead the popularity fallback.",
        examples=["jazz"],
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
    path_reason: str | None = Field(
        None, description="Why the popularity path answered (cold start, or the fallback's reason)."
    )
    arm: Arm
    experiment: str | None
    degraded: bool
    degraded_reason: str | None


# Feedback is one of two shapes; the schema says so (the validator below enforces the same).
_FEEDBACK_ONE_OF: list[dict[str, Any]] = [
    {
        "title": "fraud label",
        "required": ["request_id", "label"],
        "not": {"anyOf": [{"required": ["item_id"]}, {"required": ["event"]}]},
    },
    {
        "title": "recommendation engagement",
        "required": ["request_id", "item_id"],
        "not": {"required": ["label"]},
    },
]


def _feedback_shapes(schema: dict[str, Any]) -> None:
    _no_null_defaults(schema)
    schema["oneOf"] = _FEEDBACK_ONE_OF


class FeedbackRequest(_Body):
    """What happened after a prediction: a fraud label, or an item the listener engaged with
    (give `label`, or `item_id` with an optional `event`; never both)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_feedback_shapes)

    request_id: RequestId = Field(description="The request_id of the prediction.")
    # Typed without None: absent is allowed, an explicit null is not (as the schema says).
    label: WholeNumber = Field(  # type: ignore[assignment]
        None, ge=0, le=1, description="Fraud: 1 fraud (chargeback), 0 legitimate."
    )
    item_id: EntityId = Field(  # type: ignore[assignment]
        None, description="Recs: the item clicked or played.", examples=["i_000001"]
    )
    event: Literal["click", "play"] = Field(None, description="Recs: default play.")  # type: ignore[arg-type]

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
    version: Version | None = Field(
        None, description="Challenger version; default: the registry's @challenger."
    )


class ShadowRequest(_Body):
    version: Version | None = Field(
        None, description="Version to shadow; default: the registry's @challenger."
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
    version: Version | None = Field(
        None, description="Canary version; default: the registry's @challenger."
    )


class CanaryPercentRequest(_Body):
    percent: float = Field(gt=0, le=100, allow_inf_nan=False)


class ReasonRequest(_Body):
    reason: str = Field(
        "", max_length=300, description="Kept in the routing history and the registry."
    )


class RollbackRequest(ReasonRequest):
    challenger: Version | None = Field(
        None,
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
