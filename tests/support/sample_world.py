"""A small seeded world written straight into the offline store, for tests and benchmarks.

Contract-shaped events (docs/data-contract.md) without the simulator or the ingestion gate.

Not a model of anything: just enough repetition (cards reused across days, merchants with
chargebacks reported days later, users replaying genres) to exercise every window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.catalog import GENRES
from mlsd.settings import Settings

COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA")
CATEGORIES = ("grocery", "restaurants", "fuel", "travel", "electronics")


@dataclass(frozen=True)
class SampleSize:
    days: int = 5
    cards: int = 60
    merchants: int = 15
    tx_per_day: int = 300
    users: int = 40
    items: int = 60
    interactions_per_day: int = 400


def _stamp(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(values, unit="us", utc=True)).dt.as_unit("us")


def fraud_events(start: dt.date, size: SampleSize, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1000)
    day_us = 86_400_000_000
    cards = pd.DataFrame(
        {
            "card_id": [f"card_{i:06d}" for i in range(size.cards)],
            "home_country": rng.choice(COUNTRIES[:3], size.cards),
            "issued_at": _stamp(t0 - rng.integers(1, 400, size.cards) * day_us),
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": [f"m_{i:05d}" for i in range(size.merchants)],
            "merchant_category": rng.choice(CATEGORIES, size.merchants),
            "country": rng.choice(COUNTRIES, size.merchants),
            "onboarded_at": _stamp(t0 - rng.integers(1, 900, size.merchants) * day_us),
        }
    )
    n = size.days * size.tx_per_day
    # Three busy cards (dense 1 h windows, bursts); the rest spend at an even pace.
    card_index = np.where(
        rng.random(n) < 0.15, rng.integers(0, 3, n), rng.integers(0, size.cards, n)
    )
    device = np.where(rng.random(n) < 0.9, card_index % 3, rng.integers(3, 9, n))
    times = np.sort(t0 + rng.integers(0, size.days * day_us, n))
    tx = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1, dtype="int64"),
            "event_timestamp": _stamp(times),
            "card_id": cards["card_id"].to_numpy()[card_index],
            "merchant_id": merchants["merchant_id"].to_numpy()[rng.integers(0, size.merchants, n)],
            "merchant_category": rng.choice(CATEGORIES, n),
            "amount": np.round(rng.lognormal(3.5, 1.0, n), 2).clip(0.5, 50_000),
            "country": np.where(
                rng.random(n) < 0.9,
                cards["home_country"].to_numpy()[card_index],
                rng.choice(COUNTRIES, n),
            ),
            "device_id": [f"dev_{c}_{d}" for c, d in zip(card_index, device, strict=True)],
            "channel": rng.choice(["pos", "online"], n),
        }
    )
    fraudulent = tx[rng.random(n) < 0.05]
    delay = rng.integers(1 * 3600, 4 * 86_400, len(fraudulent)) * 1_000_000
    chargebacks = pd.DataFrame(
        {
            "transaction_id": fraudulent["transaction_id"].to_numpy(),
            "card_id": fraudulent["card_id"].to_numpy(),
            "merchant_id": fraudulent["merchant_id"].to_numpy(),
            "amount": fraudulent["amount"].to_numpy(),
            "transaction_timestamp": fraudulent["event_timestamp"].to_numpy(),
            "reported_at": _stamp(to_us(fraudulent["event_timestamp"]) + delay),
            "reason": "fraud",
        }
    )
    chargebacks["transaction_timestamp"] = pd.to_datetime(
        chargebacks["transaction_timestamp"], utc=True
    )
    return {"transactions": tx, "chargebacks": chargebacks, "cards": cards, "merchants": merchants}


def recsys_events(start: dt.date, size: SampleSize, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed + 1)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1000)
    day_us = 86_400_000_000
    users = pd.DataFrame(
        {
            "user_id": [f"u_{i:06d}" for i in range(size.users)],
            "country": rng.choice(COUNTRIES, size.users),
            "signup_at": _stamp(
                t0 - rng.integers(0, 300, size.users) * day_us + rng.integers(0, day_us, size.users)
            ),
        }
    )
    # A few items are released during the sample, so item age and cold start are exercised.
    released = (
        t0
        - rng.integers(-size.days + 1, 500, size.items) * day_us
        + rng.integers(0, day_us, size.items)
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i_{i:06d}" for i in range(size.items)],
            "genre": rng.choice(GENRES, size.items),
            "released_at": _stamp(released),
            "duration_seconds": rng.uniform(30, 1200, size.items).round(1),
        }
    )
    n = size.days * size.interactions_per_day
    times = np.sort(t0 + rng.integers(0, size.days * day_us, n))
    user_index = rng.integers(0, size.users, n)
    item_index = np.minimum(rng.zipf(1.3, n) - 1, size.items - 1)
    # Nobody plays an item before its release.
    times = np.maximum(times, released[item_index] + 1)
    interactions = pd.DataFrame(
        {
            "interaction_id": np.arange(1, n + 1, dtype="int64"),
            "event_timestamp": _stamp(times),
            "session_id": rng.integers(1, n // 5 + 2, n),
            "user_id": users["user_id"].to_numpy()[user_index],
            "item_id": items["item_id"].to_numpy()[item_index],
            "position": rng.integers(0, 10, n),
            "event": np.where(rng.random(n) < 0.6, "play", "skip"),
            "dwell_seconds": rng.uniform(0, 600, n).round(1),
        }
    )
    return {"interactions": interactions, "users": users, "items": items}


def to_us(series: pd.Series) -> np.ndarray:
    return pd.to_datetime(series, utc=True).dt.as_unit("us").astype("int64").to_numpy()


def write_offline(
    settings: Settings, world: str, events: dict[str, pd.DataFrame], day_column: dict[str, str]
) -> None:
    """Write each event type as daily hive partitions, the layout the ingestion gate produces."""
    for event_type, frame in events.items():
        column = day_column[event_type]
        days = pd.to_datetime(frame[column], utc=True).dt.date
        for day, part in frame.groupby(days):
            path: Path = (
                settings.offline_dir
                / world
                / event_type
                / f"date={day.isoformat()}"
                / "part-0.parquet"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), path
            )


DAY_COLUMNS = {
    "fraud": {
        "transactions": "event_timestamp",
        "chargebacks": "transaction_timestamp",
        "cards": "issued_at",
        "merchants": "onboarded_at",
    },
    "recsys": {"interactions": "event_timestamp", "users": "signup_at", "items": "released_at"},
}


def write_sample_world(
    settings: Settings,
    *,
    start: dt.date = dt.date(2026, 1, 1),
    size: SampleSize | None = None,
    seed: int = 7,
) -> dict[str, dict[str, pd.DataFrame]]:
    """Write both worlds into `settings.offline_dir`; returns the events written."""
    size = size or SampleSize()
    worlds = {"fraud": fraud_events(start, size, seed), "recsys": recsys_events(start, size, seed)}
    for world, events in worlds.items():
        write_offline(settings, world, events, DAY_COLUMNS[world])
    return worlds
