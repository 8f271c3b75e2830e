"""The listening world: deterministic, power-law popular, position-biased, with new items over time."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsd.settings import RecsysWorldSettings, Settings, SimulatorSettings
from simulator import simulate_frames


def small_settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        simulator=SimulatorSettings(
            recsys=RecsysWorldSettings(n_users=800, n_items=600, new_items_per_day=8)
        ),
    )


@pytest.fixture(scope="module")
def fortnight(tmp_path_factory) -> dict[str, pd.DataFrame]:
    return simulate_frames(
        small_settings(tmp_path_factory.mktemp("lab")), "recsys", days=14, seed=4
    )


def test_same_seed_gives_identical_data(tmp_path):
    s = small_settings(tmp_path)
    a, b = (
        simulate_frames(s, "recsys", days=2, seed=9),
        simulate_frames(s, "recsys", days=2, seed=9),
    )
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(a[name], b[name])


def test_popularity_follows_a_power_law(fortnight):
    plays = fortnight["interactions"].query("event == 'play'")["item_id"].value_counts()
    top_share = plays.iloc[: max(1, len(plays) // 100)].sum() / plays.sum()
    assert top_share > 0.10  # the top 1% of items take a large share of plays
    assert plays.iloc[0] > 20 * plays.median()


def test_position_bias_lowers_play_rate_down_the_slate(fortnight):
    rate = (
        fortnight["interactions"]
        .assign(play=lambda f: f["event"] == "play")
        .groupby("position")["play"]
        .mean()
    )
    assert rate.is_monotonic_decreasing
    assert rate.iloc[0] > 2 * rate.iloc[-1]


def test_plays_follow_hidden_taste(fortnight):
    it = fortnight["interactions"].merge(fortnight["truth"], on="interaction_id")
    same_slot = it[it["position"] == 3]
    played = same_slot["event"] == "play"
    assert (
        same_slot.loc[played, "affinity"].mean() > same_slot.loc[~played, "affinity"].mean() + 0.1
    )


def test_new_items_appear_over_time_and_get_played(fortnight):
    items, it = fortnight["items"], fortnight["interactions"]
    assert items["item_id"].is_unique
    start = it["event_timestamp"].min().normalize()
    new = items[items["released_at"] >= start]
    assert len(new) == 13 * 8  # days 1..13 release 8 items each
    assert it["item_id"].isin(new["item_id"]).any()
    released = it.merge(items, on="item_id")
    assert (released["event_timestamp"] >= released["released_at"].dt.normalize()).all()


def test_sessions_start_after_signup(fortnight):
    joined = fortnight["interactions"].merge(fortnight["users"], on="user_id")
    assert (joined["event_timestamp"] > joined["signup_at"]).all()
