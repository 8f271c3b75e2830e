"""Recommender feature tables: hand-counted snapshots and brute force on random listening."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import recsys
from features.catalog import GENRES, affinity_feature

DAY = dt.timedelta(days=1)
START = pd.Timestamp("2026-01-01", tz="UTC")


def at(table: pd.DataFrame, key: str, entity: str, when: pd.Timestamp) -> dict | None:
    rows = table[(table[key] == entity) & (table["event_timestamp"] <= when)]
    return None if rows.empty else rows.iloc[-1].to_dict()


ITEMS = pd.DataFrame(
    {
        "item_id": ["i1", "i2", "i3"],
        "genre": ["rock", "jazz", "rock"],
        "released_at": [
            START - pd.Timedelta(days=10),
            START - pd.Timedelta(days=10),
            START + pd.Timedelta(hours=30),
        ],
        "duration_seconds": [200.0, 300.0, 100.0],
    }
)
USERS = pd.DataFrame(
    {
        "user_id": ["u1", "u2"],
        "signup_at": [START - pd.Timedelta(days=5), START + pd.Timedelta(hours=12)],
    }
)


def interactions(rows: list[tuple[str, str, pd.Timestamp, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "interaction_id": np.arange(1, len(rows) + 1),
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
            "event": [r[3] for r in rows],
        }
    )


LISTENS = interactions(
    [
        ("u1", "i1", START + pd.Timedelta(hours=1), "play"),
        ("u1", "i2", START + pd.Timedelta(hours=2), "play"),
        ("u1", "i1", START + pd.Timedelta(hours=3), "skip"),
        ("u1", "i1", START + pd.Timedelta(hours=26), "play"),
        ("u2", "i3", START + pd.Timedelta(hours=31), "play"),
    ]
)


def test_user_activity_daily_snapshots() -> None:
    table = recsys.user_activity(LISTENS, ITEMS, USERS, refresh=DAY)
    signed_up = at(table, "user_id", "u2", START + pd.Timedelta(hours=13))
    assert signed_up is not None and signed_up["user_plays_7d"] == 0
    assert at(table, "user_id", "u2", START + pd.Timedelta(hours=11)) is None
    # Day 1's listening shows up in the snapshot at the next midnight, not before.
    late_day_one = at(table, "user_id", "u1", START + pd.Timedelta(hours=23))
    assert late_day_one is not None and late_day_one["user_plays_7d"] == 0
    day_two = at(table, "user_id", "u1", START + pd.Timedelta(days=1))
    assert day_two is not None
    assert (day_two["user_plays_7d"], day_two["user_skips_7d"]) == (2, 1)
    assert day_two["user_skip_rate_30d"] == pytest.approx(1 / 3)
    affinity = {g: day_two[affinity_feature(g)] for g in GENRES}
    assert affinity["rock"] == 0.5 and affinity["jazz"] == 0.5 and sum(affinity.values()) == 1.0
    assert day_two["user_last_play_epoch_s"] == (START + pd.Timedelta(hours=2)).timestamp()
    day_three = at(table, "user_id", "u1", START + pd.Timedelta(days=2, hours=5))
    assert day_three is not None and day_three["user_plays_7d"] == 3
    gone = at(table, "user_id", "u1", START + pd.Timedelta(days=40))
    assert gone is not None and gone["user_plays_30d"] == 0 and gone["user_skip_rate_30d"] == 0.0


def test_item_stats_from_release_and_daily_popularity() -> None:
    table = recsys.item_stats(LISTENS, ITEMS, refresh=DAY)
    assert at(table, "item_id", "i3", START + pd.Timedelta(hours=29)) is None
    released = at(table, "item_id", "i3", START + pd.Timedelta(hours=30))
    assert released is not None
    assert released["item_plays_7d"] == 0 and released["item_genre"] == "rock"
    assert released["item_genre_index"] == GENRES.index("rock")
    assert released["item_released_epoch_s"] == (START + pd.Timedelta(hours=30)).timestamp()
    i1 = at(table, "item_id", "i1", START + pd.Timedelta(days=2))
    assert i1 is not None
    assert (i1["item_plays_7d"], i1["item_impressions_7d"]) == (2, 3)
    assert i1["item_play_rate_7d"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_snapshots_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(8)],
            "genre": rng.choice(GENRES[:4], 8),
            "released_at": START - pd.Timedelta(days=1),
            "duration_seconds": 100.0,
        }
    )
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "signup_at": START - pd.Timedelta(days=1)})
    listens = pd.DataFrame(
        {
            "interaction_id": np.arange(n),
            "user_id": rng.choice(users["user_id"], n),
            "item_id": rng.choice(items["item_id"], n),
            "event_timestamp": START
            + pd.to_timedelta(rng.integers(0, 40 * 24 * 60, n), unit="min"),
            "event": rng.choice(["play", "skip"], n),
        }
    )
    user_table = recsys.user_activity(listens, items, users, refresh=DAY)
    item_table = recsys.item_stats(listens, items, refresh=DAY)
    genre_of = items.set_index("item_id")["genre"]
    for q in START + pd.to_timedelta(rng.integers(0, 60 * 24, 30), unit="h"):
        snapshot = q.floor("D")
        seen = listens[listens["event_timestamp"] < snapshot]
        for user in users["user_id"]:
            row = at(user_table, "user_id", user, q)
            assert row is not None
            mine = seen[seen["user_id"] == user]
            week = mine[mine["event_timestamp"] >= snapshot - pd.Timedelta("7D")]
            month = mine[mine["event_timestamp"] >= snapshot - pd.Timedelta("30D")]
            assert row["user_plays_7d"] == (week["event"] == "play").sum()
            assert row["user_skips_7d"] == (week["event"] == "skip").sum()
            assert row["user_plays_30d"] == (month["event"] == "play").sum()
            month_plays = month[month["event"] == "play"]
            shares = month_plays["item_id"].map(genre_of).value_counts(normalize=True)
            expected = [shares.get(g, 0.0) for g in GENRES]
            assert [row[affinity_feature(g)] for g in GENRES] == pytest.approx(expected)
        for item in items["item_id"]:
            row = at(item_table, "item_id", item, q)
            assert row is not None
            week = seen[
                (seen["item_id"] == item)
                & (seen["event_timestamp"] >= snapshot - pd.Timedelta("7D"))
            ]
            assert row["item_plays_7d"] == (week["event"] == "play").sum()
            assert row["item_impressions_7d"] == len(week)
