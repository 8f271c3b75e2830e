"""Pieces both simulated worlds share: seeded streams, the daily cycle, timestamps."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

COUNTRIES = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "CA",
    "BR",
    "MX",
    "IN",
    "JP",
    "NG",
    "RU",
    "CN",
    "AU",
)
# Where people live: a skewed mix, so that "foreign" is informative for most cards.
COUNTRY_WEIGHTS = np.array([30, 10, 9, 8, 5, 5, 3, 6, 5, 4, 5, 4, 1, 1, 2, 2], dtype=float)
COUNTRY_WEIGHTS /= COUNTRY_WEIGHTS.sum()

# Share of activity by hour of day: quiet nights, a lunch peak and an evening peak.
HOUR_WEIGHTS = np.array(
    [
        0.8,
        0.5,
        0.3,
        0.25,
        0.25,
        0.4,
        1.0,
        2.2,
        3.5,
        4.2,
        4.6,
        5.2,
        6.3,
        6.0,
        5.0,
        4.8,
        5.0,
        5.6,
        6.4,
        6.8,
        6.1,
        4.6,
        3.0,
        1.6,
    ]
)
HOUR_WEIGHTS /= HOUR_WEIGHTS.sum()
# Fraudsters working from other time zones are active when cardholders sleep.
NIGHT_HOUR_WEIGHTS = np.roll(HOUR_WEIGHTS, 12)

SECONDS_PER_DAY = 86_400


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent random stream for (seed, keys): the same keys always give the same draws,
    whatever else was drawn before, so a day simulated alone equals the same day in a long run."""
    return np.random.default_rng([seed, *keys])


def day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch at 00:00 UTC of `day`."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000


def seconds_in_day(
    rng: np.random.Generator, n: int, hour_weights: np.ndarray = HOUR_WEIGHTS
) -> np.ndarray:
    """`n` times of day (float seconds) following the daily cycle."""
    hours = rng.choice(24, size=n, p=hour_weights)
    return hours * 3600.0 + rng.random(n) * 3600.0


def to_timestamps(us_since_epoch: np.ndarray) -> pd.Series:
    """int64 microseconds -> tz-aware UTC timestamps at microsecond precision (the contract's type)."""
    return pd.Series(pd.to_datetime(us_since_epoch.astype("int64"), unit="us", utc=True)).astype(
        "datetime64[us, UTC]"
    )


def ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Readable string ids (`card_000042`) for an array of integers."""
    return np.array([f"{prefix}{n:0{width}d}" for n in numbers.tolist()], dtype=object)


@dataclass(frozen=True)
class DayOutput:
    """What one simulated day produces: the batches that land, and the truth only the world knows."""

    batches: dict[str, pd.DataFrame]
    truth: pd.DataFrame | None = None
