"""The recommender's feature tables, computed from raw listening events: pure functions.

User and item features are batch snapshots refreshed every ``recsys_refresh_hours`` (UTC-aligned),
plus a row at sign-up / release so a new user or item is known from its first moment. A snapshot
at q sees the events strictly before q. Names and windows come from ``features.catalog``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import (
    EVENT_TIMESTAMP,
    GENRE_AFFINITY_WINDOW,
    GENRES,
    ITEM_POPULARITY_WINDOW,
    USER_ACTIVITY_WINDOWS,
    affinity_feature,
)
from features.windows import (
    Timeline,
    change_points,
    drop_unchanged,
    entity_codes,
    epoch_seconds_us,
    from_us,
    to_us,
)


def _us(width: dt.timedelta) -> int:
    return int(width / dt.timedelta(microseconds=1))


def genre_index(genres: pd.Series) -> np.ndarray:
    """Position of each genre in GENRES; -1 for anything else."""
    lookup = {g: i for i, g in enumerate(GENRES)}
    return genres.map(lookup).fillna(-1).to_numpy(dtype="int64")


def user_activity(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, *, refresh: dt.timedelta
) -> pd.DataFrame:
    """Per user: plays and skips over 7 d / 30 d, skip rate, genre affinities over 30 d, and the
    time of the latest play, at every refresh instant they change and at sign-up."""
    ids, (codes, user_codes) = entity_codes(interactions["user_id"], users["user_id"])
    times = to_us(interactions[EVENT_TIMESTAMP])
    is_play = interactions["event"].to_numpy() == "play"
    item_genre = pd.Series(genre_index(items["genre"]), index=items["item_id"].to_numpy())
    item_genre = item_genre[~item_genre.index.duplicated(keep="last")]
    genre = interactions["item_id"].map(item_genre).fillna(-1).to_numpy(dtype="int64")

    windows = {label: _us(w) for label, w in USER_ACTIVITY_WINDOWS.items()}
    affinity_width = GENRE_AFFINITY_WINDOW[1]
    keys, at = change_points(
        codes,
        times,
        [*windows.values(), _us(affinity_width)],
        period_us=_us(refresh),
        extra=(user_codes, to_us(users["signup_at"])),
    )
    plays = Timeline.of(
        codes[is_play],
        times[is_play],
        {g: (genre[is_play] == i).astype("float64") for i, g in enumerate(GENRES)},
    )
    skips = Timeline.of(codes[~is_play], times[~is_play])

    short, long_ = list(windows)
    columns: dict[str, Any] = {
        f"user_plays_{short}": plays.count(keys, at, windows[short]),
        f"user_skips_{short}": skips.count(keys, at, windows[short]),
        f"user_plays_{long_}": plays.count(keys, at, windows[long_]),
    }
    plays_long = plays.count(keys, at, windows[long_])
    skips_long = skips.count(keys, at, windows[long_])
    shown = plays_long + skips_long
    columns[f"user_skip_rate_{long_}"] = np.where(shown > 0, skips_long / np.maximum(shown, 1), 0.0)

    per_genre = np.stack([plays.total(g, keys, at, _us(affinity_width)) for g in GENRES], axis=1)
    known_plays = per_genre.sum(axis=1, keepdims=True)
    shares = np.where(known_plays > 0, per_genre / np.maximum(known_plays, 1), 0.0)
    for i, genre_name in enumerate(GENRES):
        columns[affinity_feature(genre_name)] = shares[:, i]

    last = plays.last_before(keys, at)
    columns["user_last_play_epoch_s"] = np.where(
        last >= 0, epoch_seconds_us(plays.times[np.maximum(last, 0)]), np.nan
    )
    table = pd.DataFrame({"user_id": ids.to_numpy()[keys], EVENT_TIMESTAMP: from_us(at)})
    for name, values in columns.items():
        table[name] = values
    return drop_unchanged(table, "user_id", list(columns))


def item_stats(
    interactions: pd.DataFrame, items: pd.DataFrame, *, refresh: dt.timedelta
) -> pd.DataFrame:
    """Per item: plays and impressions over 7 d with the play rate, at every refresh instant they
    change, plus its genre, release time and duration, from the instant of release."""
    label, width = ITEM_POPULARITY_WINDOW
    ids, (codes, item_codes) = entity_codes(interactions["item_id"], items["item_id"])
    times = to_us(interactions[EVENT_TIMESTAMP])
    is_play = interactions["event"].to_numpy() == "play"
    keys, at = change_points(
        codes,
        times,
        [_us(width)],
        period_us=_us(refresh),
        extra=(item_codes, to_us(items["released_at"])),
    )
    play_count = Timeline.of(codes[is_play], times[is_play]).count(keys, at, _us(width))
    impressions = Timeline.of(codes, times).count(keys, at, _us(width))

    static = items.drop_duplicates("item_id", keep="last").set_index("item_id")
    item_ids = pd.Series(ids.to_numpy()[keys])
    genre = item_ids.map(static["genre"])
    released = static["released_at"]
    released_s = pd.Series(epoch_seconds_us(to_us(released)), index=released.index)
    table = pd.DataFrame(
        {
            "item_id": item_ids.to_numpy(),
            EVENT_TIMESTAMP: from_us(at),
            f"item_plays_{label}": play_count,
            f"item_impressions_{label}": impressions,
            f"item_play_rate_{label}": np.where(
                impressions > 0, play_count / np.maximum(impressions, 1), 0.0
            ),
            "item_genre": genre.to_numpy(dtype="object"),
            "item_genre_index": genre_index(genre),
            "item_released_epoch_s": item_ids.map(released_s).to_numpy(dtype="float64"),
            "item_duration_seconds": item_ids.map(static["duration_seconds"]).to_numpy(
                dtype="float64"
            ),
        }
    )
    return drop_unchanged(table, "item_id", list(table.columns[2:]))
