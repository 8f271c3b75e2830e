"""The feature contract: every entity, view, feature, default and service, as plain data.

The table builders (``features.fraud``, ``features.recsys``), the Feast definitions
(``features.definitions``) and the facade (``features.store``) all read this one module, so a
feature's name, type and default cannot drift between training and serving. A window is part of
a feature's name (``card_tx_count_1h``): changing one is a new feature and a new model, not a
runtime setting. Importing this module is cheap (no Feast).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

DType = Literal["int64", "float64", "string", "string_list", "float64_list", "float32_list"]
World = Literal["fraud", "recsys"]

EVENT_TIMESTAMP = "event_timestamp"
# The request's own time as float epoch seconds: on-demand features that depend on "now"
# (hour of day, time since the last transaction) read it, so training and serving agree on now.
EVENT_EPOCH_S = "event_epoch_s"
# Feast's parquet store drops an entity row whose entity has rows, but none at or before the
# row's time; one all-null row per entity at the epoch keeps every row (see features.tables).
SENTINEL_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

VELOCITY_WINDOWS: dict[str, dt.timedelta] = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}
DISTINCT_MERCHANTS_WINDOW = ("24h", DAY)
PROFILE_WINDOW = ("30d", 30 * DAY)
MERCHANT_RISK_WINDOW = ("30d", 30 * DAY)
USER_ACTIVITY_WINDOWS: dict[str, dt.timedelta] = {"7d": 7 * DAY, "30d": 30 * DAY}
GENRE_AFFINITY_WINDOW = ("30d", 30 * DAY)
ITEM_POPULARITY_WINDOW = ("7d", 7 * DAY)

# The data contract's genres (docs/data-contract.md), in order: the affinity vector follows it.
GENRES: tuple[str, ...] = (
    "pop",
    "rock",
    "hiphop",
    "electronic",
    "jazz",
    "classical",
    "country",
    "latin",
    "rnb",
    "metal",
    "folk",
    "ambient",
)


@dataclass(frozen=True)
class EntitySpec:
    name: str
    join_key: str
    description: str

    @property
    def unknown_marker(self) -> str:
        """Column / feature that says the store knew nothing of this entity at that time."""
        return f"{self.name}_unknown"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: DType
    default: Any
    description: str
    served: bool = True  # False: kept in the view as an input of an on-demand feature only


@dataclass(frozen=True)
class ViewSpec:
    """A Feast feature view backed by one parquet table under ``<data_dir>/features/tables``."""

    name: str
    world: World
    entity: str
    features: tuple[FeatureSpec, ...]
    description: str
    written_by: Literal["build", "training"] = "build"

    @property
    def served(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.served)


@dataclass(frozen=True)
class RequestFieldSpec:
    name: str
    dtype: DType
    description: str


@dataclass(frozen=True)
class OnDemandSpec:
    """An on-demand view: computed at request time from stored features and request data."""

    name: str
    world: World
    sources: tuple[str, ...]
    request: tuple[RequestFieldSpec, ...]
    features: tuple[FeatureSpec, ...]
    description: str


@dataclass(frozen=True)
class ServiceSpec:
    """A Feast feature service: exactly the features one model is trained and served with."""

    name: str
    world: World
    views: tuple[str, ...]
    on_demand: tuple[str, ...]
    description: str


ENTITIES: dict[str, EntitySpec] = {
    e.name: e
    for e in (
        EntitySpec("card", "card_id", "A payment card (cardholder)."),
        EntitySpec("merchant", "merchant_id", "A merchant accepting card payments."),
        EntitySpec("user", "user_id", "A listener of the music service."),
        EntitySpec("item", "item_id", "A track in the catalogue."),
    )
}


def _velocity_features() -> tuple[FeatureSpec, ...]:
    features: list[FeatureSpec] = []
    for label in VELOCITY_WINDOWS:
        features.append(
            FeatureSpec(
                f"card_tx_count_{label}",
                "int64",
                0,
                f"Transactions of the card in the last {label}.",
            )
        )
        features.append(
            FeatureSpec(
                f"card_tx_amount_{label}",
                "float64",
                0.0,
                f"USD spent by the card in the last {label}.",
            )
        )
    label = DISTINCT_MERCHANTS_WINDOW[0]
    features.append(
        FeatureSpec(
            f"card_distinct_merchants_{label}",
            "int64",
            0,
            f"Distinct merchants the card paid in the last {label}.",
        )
    )
    features.append(
        FeatureSpec(
            "card_last_tx_epoch_s",
            "float64",
            -1.0,
            "Time of the card's previous transaction (epoch s); input of seconds_since_last_tx.",
            served=False,
        )
    )
    return tuple(features)


def affinity_feature(genre: str) -> str:
    """The user feature holding the share of plays in `genre` (a column, not a list: cheap in
    Feast's parquet store and usable by a model as it is)."""
    return f"user_affinity_{genre}_{GENRE_AFFINITY_WINDOW[0]}"


def _affinity_features() -> tuple[FeatureSpec, ...]:
    label = GENRE_AFFINITY_WINDOW[0]
    return tuple(
        FeatureSpec(
            affinity_feature(genre),
            "float64",
            0.0,
            f"Share of the user's plays over {label} that were {genre}; input of on-demand.",
            served=False,
        )
        for genre in GENRES
    )


_P = PROFILE_WINDOW[0]
_M = MERCHANT_RISK_WINDOW[0]
_U7, _U30 = USER_ACTIVITY_WINDOWS
_I = ITEM_POPULARITY_WINDOW[0]

VIEWS: dict[str, ViewSpec] = {
    v.name: v
    for v in (
        ViewSpec(
            "card_velocity",
            "fraud",
            "card",
            _velocity_features(),
            "How fast a card is spending: counts and amounts over sliding windows, exact at every instant.",
        ),
        ViewSpec(
            "card_profile",
            "fraud",
            "card",
            (
                FeatureSpec(
                    f"card_tx_count_{_P}", "int64", 0, f"Transactions of the card in the last {_P}."
                ),
                FeatureSpec(
                    f"card_amount_mean_{_P}",
                    "float64",
                    0.0,
                    f"Mean amount (USD) over the last {_P}.",
                ),
                FeatureSpec(
                    f"card_amount_std_{_P}",
                    "float64",
                    0.0,
                    f"Sample standard deviation of amount over {_P}.",
                ),
                FeatureSpec(
                    "card_home_country",
                    "string",
                    "unknown",
                    "Country the card was issued in.",
                    served=False,
                ),
            ),
            "What is normal for a card: spending level and spread over 30 d, home country.",
        ),
        ViewSpec(
            "card_devices",
            "fraud",
            "card",
            (
                FeatureSpec(
                    "card_known_devices",
                    "string_list",
                    [],
                    "Devices the card has been used from before; input of is_new_device.",
                    served=False,
                ),
                FeatureSpec(
                    "card_n_known_devices",
                    "int64",
                    0,
                    "How many devices the card has been used from.",
                ),
            ),
            # Its own view: the list changes only when a new device appears, and a list column
            # is costly in Feast's parquet store, so it should not repeat on every transaction.
            "Devices a card has been used from, one row each time a new one appears.",
        ),
        ViewSpec(
            "merchant_risk",
            "fraud",
            "merchant",
            (
                FeatureSpec(
                    f"merchant_tx_count_{_M}",
                    "int64",
                    0,
                    f"Transactions at the merchant in the last {_M}.",
                ),
                FeatureSpec(
                    f"merchant_chargeback_count_{_M}",
                    "int64",
                    0,
                    "Of those, how many had a chargeback reported before the snapshot.",
                ),
                FeatureSpec(
                    f"merchant_chargeback_rate_{_M}",
                    "float64",
                    0.0,
                    f"Chargebacks known so far per transaction over the last {_M} (labels only once reported).",
                ),
            ),
            "Merchant risk from chargebacks known at each batch snapshot: no label before its reported_at.",
        ),
        ViewSpec(
            "user_activity",
            "recsys",
            "user",
            (
                FeatureSpec(
                    f"user_plays_{_U7}", "int64", 0, f"Plays by the user in the last {_U7}."
                ),
                FeatureSpec(
                    f"user_skips_{_U7}", "int64", 0, f"Skips by the user in the last {_U7}."
                ),
                FeatureSpec(
                    f"user_plays_{_U30}", "int64", 0, f"Plays by the user in the last {_U30}."
                ),
                FeatureSpec(
                    f"user_skip_rate_{_U30}",
                    "float64",
                    0.0,
                    f"Skips per shown item over the last {_U30}.",
                ),
                *_affinity_features(),
                FeatureSpec(
                    "user_last_play_epoch_s",
                    "float64",
                    -1.0,
                    "Time of the user's latest play (epoch s); input of seconds_since_last_play.",
                    served=False,
                ),
            ),
            "How and what a listener plays: activity, genre affinities, recency (batch snapshot).",
        ),
        ViewSpec(
            "item_stats",
            "recsys",
            "item",
            (
                FeatureSpec(
                    f"item_plays_{_I}",
                    "int64",
                    0,
                    f"Plays of the item in the last {_I} (popularity).",
                ),
                FeatureSpec(
                    f"item_impressions_{_I}",
                    "int64",
                    0,
                    f"Times the item was shown in the last {_I}.",
                ),
                FeatureSpec(
                    f"item_play_rate_{_I}",
                    "float64",
                    0.0,
                    f"Plays per impression over the last {_I}.",
                ),
                FeatureSpec("item_genre", "string", "unknown", "Genre of the item.", served=False),
                FeatureSpec(
                    "item_genre_index", "int64", -1, "Position of the item's genre in GENRES."
                ),
                FeatureSpec(
                    "item_released_epoch_s",
                    "float64",
                    -1.0,
                    "Release time (epoch s); input of item_age_days.",
                    served=False,
                ),
                FeatureSpec("item_duration_seconds", "float64", 0.0, "Length of the track (s)."),
            ),
            "What an item is and how popular it is lately (batch snapshot, plus a row at release).",
        ),
        ViewSpec(
            "user_embedding",
            "recsys",
            "user",
            (
                FeatureSpec(
                    "user_vector", "float32_list", [], "User vector of the retrieval model."
                ),
                FeatureSpec(
                    "user_embedding_version", "string", "", "Model version that produced it."
                ),
            ),
            "User vectors written back by retrieval training (write_embeddings).",
            written_by="training",
        ),
        ViewSpec(
            "item_embedding",
            "recsys",
            "item",
            (
                FeatureSpec(
                    "item_vector", "float32_list", [], "Item vector of the retrieval model."
                ),
                FeatureSpec(
                    "item_embedding_version", "string", "", "Model version that produced it."
                ),
            ),
            "Item vectors written back by retrieval training (write_embeddings).",
            written_by="training",
        ),
    )
}

ON_DEMAND: dict[str, OnDemandSpec] = {
    o.name: o
    for o in (
        OnDemandSpec(
            "transaction_context",
            "fraud",
            ("card_velocity", "card_profile", "card_devices"),
            (
                RequestFieldSpec(
                    "amount", "float64", "Amount of the transaction being scored (USD)."
                ),
                RequestFieldSpec("country", "string", "Country where the transaction happens."),
                RequestFieldSpec("device_id", "string", "Device the transaction comes from."),
                RequestFieldSpec(EVENT_EPOCH_S, "float64", "Time of the transaction (epoch s)."),
            ),
            (
                FeatureSpec(
                    "amount_over_card_mean",
                    "float64",
                    -1.0,
                    f"Amount over the card's {_P} mean amount; -1 when the card has no history.",
                ),
                FeatureSpec(
                    "is_foreign_country", "int64", 0, "1 when the country is not the card's home."
                ),
                FeatureSpec(
                    "is_new_device", "int64", 1, "1 when the card has never been used from it."
                ),
                FeatureSpec("hour_of_day", "int64", 0, "Hour of the transaction (UTC)."),
                FeatureSpec(
                    "seconds_since_last_tx",
                    "float64",
                    -1.0,
                    "Seconds since the card's previous transaction; -1 when there was none.",
                ),
            ),
            "What only the request knows, set against the card's stored profile.",
        ),
        OnDemandSpec(
            "listening_context",
            "recsys",
            ("user_activity", "item_stats"),
            (
                RequestFieldSpec(
                    EVENT_EPOCH_S, "float64", "Time of the recommendation request (epoch s)."
                ),
            ),
            (
                FeatureSpec(
                    "user_genre_affinity_for_item",
                    "float64",
                    0.0,
                    "The user's affinity for the item's genre.",
                ),
                FeatureSpec(
                    "seconds_since_last_play",
                    "float64",
                    -1.0,
                    "Seconds since the user's latest play; -1: none.",
                ),
                FeatureSpec(
                    "item_age_days", "float64", -1.0, "Days since the item's release; -1: unknown."
                ),
            ),
            "User-item and time-dependent features computed at request time.",
        ),
    )
}

SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec(
            "fraud_scoring",
            "fraud",
            ("card_velocity", "card_profile", "card_devices", "merchant_risk"),
            ("transaction_context",),
            "The fraud model: score one card transaction.",
        ),
        ServiceSpec(
            "recsys_ranking",
            "recsys",
            ("user_activity", "item_stats"),
            ("listening_context",),
            "The recommender's ranking model: score one (user, item) candidate.",
        ),
        ServiceSpec(
            "recsys_retrieval_user",
            "recsys",
            ("user_embedding",),
            (),
            "The retrieval model's query side: the user's vector.",
        ),
        ServiceSpec(
            "recsys_retrieval_item",
            "recsys",
            ("item_embedding",),
            (),
            "The retrieval model's index side: an item's vector.",
        ),
    )
}


def service_entities(service: ServiceSpec) -> tuple[EntitySpec, ...]:
    """The entities whose keys a request for `service` must carry, in view order."""
    names = dict.fromkeys(VIEWS[v].entity for v in service.views)
    return tuple(ENTITIES[n] for n in names)


def service_request_fields(service: ServiceSpec) -> tuple[RequestFieldSpec, ...]:
    fields = {f.name: f for o in service.on_demand for f in ON_DEMAND[o].request}
    return tuple(fields.values())


def service_features(service: ServiceSpec) -> tuple[FeatureSpec, ...]:
    """The features a model of `service` sees, in order: served view features, then on-demand."""
    out: list[FeatureSpec] = []
    for v in service.views:
        out += VIEWS[v].served
    for o in service.on_demand:
        out += ON_DEMAND[o].features
    return tuple(out)


def views_of_world(world: str) -> tuple[ViewSpec, ...]:
    """The views of `world` that `features build` writes (not those training writes)."""
    return tuple(v for v in VIEWS.values() if v.world == world and v.written_by == "build")
