"""The payments world: deterministic, realistic in its rates, and honest about time."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlsd.settings import FraudWorldSettings, Settings, SimulatorSettings
from simulator import simulate_frames
from simulator.landing import iter_days


def small_settings(tmp_path, **fraud) -> Settings:
    return Settings(
        data_dir=tmp_path,
        simulator=SimulatorSettings(
            fraud=FraudWorldSettings(n_cards=3_000, n_merchants=300, **fraud)
        ),
    )


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> dict[str, pd.DataFrame]:
    return simulate_frames(
        small_settings(tmp_path_factory.mktemp("lab")), "fraud", days=30, seed=11
    )


def test_same_seed_gives_identical_data(tmp_path):
    s = small_settings(tmp_path)
    a = simulate_frames(s, "fraud", days=3, seed=5)
    b = simulate_frames(s, "fraud", days=3, seed=5)
    for name in ("transactions", "chargebacks", "cards", "merchants", "truth"):
        pd.testing.assert_frame_equal(a[name], b[name])


def test_other_seed_gives_other_data(tmp_path):
    s = small_settings(tmp_path)
    a = simulate_frames(s, "fraud", days=1, seed=5)["transactions"]
    b = simulate_frames(s, "fraud", days=1, seed=6)["transactions"]
    assert not a["amount"].equals(b["amount"])


def test_a_day_simulated_alone_equals_the_same_day_in_a_longer_run(tmp_path):
    s = small_settings(tmp_path)
    long_run = simulate_frames(s, "fraud", days=4, seed=3)["transactions"]
    day3 = s.simulator.start_date + dt.timedelta(days=3)
    alone = simulate_frames(s, "fraud", days=1, seed=3, start=day3)["transactions"]
    from_long = long_run[long_run["event_timestamp"].dt.date == day3].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, from_long)


def test_fraud_rate_is_within_realistic_bounds(month):
    rate = month["truth"]["is_fraud"].mean()
    assert 0.002 <= rate <= 0.01, rate


def test_chargebacks_arrive_after_their_transactions_and_only_for_fraud(month):
    cb, truth, tx = month["chargebacks"], month["truth"], month["transactions"]
    delay = cb["reported_at"] - cb["transaction_timestamp"]
    assert (delay >= pd.Timedelta(days=1)).all()
    assert delay.mean() > pd.Timedelta(days=5)
    frauds = set(truth.loc[truth["is_fraud"], "transaction_id"])
    assert set(cb["transaction_id"]) <= frauds
    # Most but not all frauds are ever reported.
    assert 0.85 < len(cb) / len(frauds) <= 1.0
    joined = cb.merge(tx, on="transaction_id", suffixes=("_cb", ""))
    assert (joined["transaction_timestamp"] == joined["event_timestamp"]).all()
    assert (joined["amount_cb"] == joined["amount"]).all()


def test_transactions_follow_the_contract(month):
    tx = month["transactions"]
    assert tx["transaction_id"].is_unique
    assert str(tx["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert (tx["amount"] > 0).all()
    # Days are simulated in order and each day's rows sorted by time: the feed arrives in order.
    assert tx["event_timestamp"].is_monotonic_increasing
    assert set(tx["channel"]) == {"pos", "online"}
    assert tx[["card_id", "merchant_id", "device_id", "country"]].notna().all().all()


def test_daily_cycle_nights_are_quiet(month):
    hour = month["transactions"]["event_timestamp"].dt.hour
    night, evening = (hour.between(2, 4)).mean(), (hour.between(18, 20)).mean()
    assert evening > 5 * night


def test_fraud_patterns_are_learnable_from_features(month):
    """Each pattern leaves a trace a feature can see: burst velocity, new device, foreign, large."""
    tx = month["transactions"].merge(month["truth"], on="transaction_id")
    cards = month["cards"].set_index("card_id")["home_country"]
    tx["foreign"] = tx["country"] != tx["card_id"].map(cards)
    tx["usual_device"] = tx["device_id"].str.startswith("dev_0")
    fraud, legit = tx[tx["is_fraud"]], tx[~tx["is_fraud"]]
    assert fraud["foreign"].mean() > 3 * legit["foreign"].mean()
    assert fraud["usual_device"].mean() < 0.5 < legit["usual_device"].mean()
    # Card testing: many tiny amounts from one card within minutes.
    tiny = fraud[fraud["amount"] < 5]
    bursts = tiny.groupby("device_id").size()
    assert (bursts >= 4).sum() >= 5
    # Compromised merchants: the chargeback rate of a few merchants stands far above the rest.
    by_merchant = tx.groupby("merchant_id")["is_fraud"].agg(["mean", "size"])
    busy = by_merchant[by_merchant["size"] >= 50]
    assert busy["mean"].max() > 10 * tx["is_fraud"].mean()


def test_start_before_the_world_begins_is_refused(tmp_path):
    s = small_settings(tmp_path)
    with pytest.raises(ValueError, match="before the world's first day"):
        list(
            iter_days(
                s, "fraud", days=1, seed=1, start=s.simulator.start_date - dt.timedelta(days=1)
            )
        )


def test_entity_snapshots_land_with_the_first_day_only(tmp_path):
    s = small_settings(tmp_path)
    days = list(iter_days(s, "fraud", days=2, seed=1))
    assert {"cards", "merchants"} <= set(days[0][1].batches)
    assert "cards" not in days[1][1].batches
    cards = days[0][1].batches["cards"]
    assert cards["card_id"].is_unique and len(cards) == 3_000
    assert np.isin(days[1][1].batches["transactions"]["card_id"], cards["card_id"]).all()
