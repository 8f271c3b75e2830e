"""Fraud feature tables: hand-counted answers, brute force on random events, and no leakage."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import fraud

T0 = pd.Timestamp("2026-01-01 10:00", tz="UTC")
US = pd.Timedelta(microseconds=1)
DAY = dt.timedelta(days=1)


def at(table: pd.DataFrame, key: str, entity: str, when: pd.Timestamp) -> dict | None:
    """The row Feast's point-in-time join would pick: the latest at or before `when`."""
    rows = table[(table[key] == entity) & (table["event_timestamp"] <= when)]
    return None if rows.empty else rows.iloc[-1].to_dict()


def transactions(rows: list[tuple[str, str, pd.Timestamp, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, len(rows) + 1),
            "card_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "event_timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
            "amount": [r[3] for r in rows],
            "device_id": [r[4] for r in rows],
            "country": "US",
        }
    )


TX = transactions(
    [
        ("c1", "m1", T0, 10.0, "d1"),
        ("c1", "m2", T0 + pd.Timedelta(minutes=30), 20.0, "d2"),
        ("c1", "m1", T0 + pd.Timedelta(hours=2), 5.0, "d1"),
        ("c2", "m1", T0 + pd.Timedelta(minutes=15), 7.0, "x"),
    ]
)
CARDS = pd.DataFrame(
    {
        "card_id": ["c1", "c2", "c3"],
        "home_country": ["US", "GB", "DE"],
        "issued_at": pd.to_datetime(["2025-01-01"] * 3, utc=True),
    }
)


def test_velocity_known_answers() -> None:
    table = fraud.card_velocity(TX)
    # A transaction never counts towards itself: at its own instant the card has no history.
    assert at(table, "card_id", "c1", T0) is None
    just_after = at(table, "card_id", "c1", T0 + US)
    assert just_after is not None
    assert (just_after["card_tx_count_1h"], just_after["card_tx_amount_1h"]) == (1, 10.0)
    half_past = at(table, "card_id", "c1", T0 + pd.Timedelta(minutes=45))
    assert half_past is not None
    assert half_past["card_tx_count_1h"] == 2 and half_past["card_tx_amount_1h"] == 30.0
    assert half_past["card_distinct_merchants_24h"] == 2
    assert half_past["card_last_tx_epoch_s"] == (T0 + pd.Timedelta(minutes=30)).timestamp()
    # The 10:00 transaction is in [q - 1 h, q) up to q = 11:00 and out from 11:00 + 1 µs.
    on_edge = at(table, "card_id", "c1", T0 + pd.Timedelta(hours=1))
    past_edge = at(table, "card_id", "c1", T0 + pd.Timedelta(hours=1) + US)
    assert on_edge is not None and past_edge is not None
    assert on_edge["card_tx_count_1h"] == 2 and past_edge["card_tx_count_1h"] == 1
    next_day = at(table, "card_id", "c1", T0 + pd.Timedelta(hours=25))
    assert next_day is not None
    assert next_day["card_tx_count_24h"] == 1 and next_day["card_tx_amount_24h"] == 5.0
    assert next_day["card_distinct_merchants_24h"] == 1 and next_day["card_tx_count_7d"] == 3
    much_later = at(table, "card_id", "c1", T0 + pd.Timedelta(days=30))
    assert much_later is not None
    assert much_later["card_tx_count_7d"] == 0 and much_later["card_tx_amount_7d"] == 0.0


def test_velocity_has_one_row_per_card_and_instant() -> None:
    table = fraud.card_velocity(TX)
    assert not table.duplicated(["card_id", "event_timestamp"]).any()
    assert table["event_timestamp"].dt.tz is not None


def test_profile_known_answers() -> None:
    table = fraud.card_profile(TX, CARDS)
    issued = at(table, "card_id", "c3", pd.Timestamp("2025-06-01", tz="UTC"))
    assert issued is not None
    assert issued["card_tx_count_30d"] == 0 and issued["card_home_country"] == "DE"
    after_three = at(table, "card_id", "c1", T0 + pd.Timedelta(hours=3))
    assert after_three is not None
    assert after_three["card_tx_count_30d"] == 3
    assert after_three["card_amount_mean_30d"] == pytest.approx(35 / 3)
    assert after_three["card_amount_std_30d"] == pytest.approx(np.std([10, 20, 5], ddof=1))
    later = at(table, "card_id", "c1", T0 + pd.Timedelta(days=40))
    assert later is not None
    assert later["card_tx_count_30d"] == 0 and later["card_amount_mean_30d"] == 0.0


def test_devices_are_known_from_just_after_first_use() -> None:
    table = fraud.card_devices(TX)
    assert at(table, "card_id", "c1", T0) is None
    first = at(table, "card_id", "c1", T0 + US)
    assert first is not None and first["card_known_devices"] == ["d1"]
    both = at(table, "card_id", "c1", T0 + pd.Timedelta(minutes=30) + US)
    assert both is not None and both["card_known_devices"] == ["d1", "d2"]
    assert both["card_n_known_devices"] == 2
    # One row per new device, not per transaction, and devices stay known.
    assert len(table[table["card_id"] == "c1"]) == 2
    assert at(table, "card_id", "c1", T0 + pd.Timedelta(days=400))["card_n_known_devices"] == 2  # type: ignore[index]


def test_merchant_risk_counts_a_label_only_once_reported() -> None:
    tx = transactions(
        [
            ("c1", "m1", pd.Timestamp("2026-01-01 10:00", tz="UTC"), 10.0, "d"),
            ("c2", "m1", pd.Timestamp("2026-01-01 11:00", tz="UTC"), 20.0, "d"),
        ]
    )
    chargebacks = pd.DataFrame(
        {
            "transaction_id": [1],
            "card_id": ["c1"],
            "merchant_id": ["m1"],
            "transaction_timestamp": pd.to_datetime(["2026-01-01 10:00"], utc=True),
            "reported_at": pd.to_datetime(["2026-01-05 12:00"], utc=True),
        }
    )
    merchants = pd.DataFrame(
        {"merchant_id": ["m1"], "onboarded_at": pd.to_datetime(["2025-01-01"], utc=True)}
    )
    table = fraud.merchant_risk(tx, chargebacks, merchants, refresh=DAY)

    def risk(when: str) -> tuple[int, int, float]:
        row = at(table, "merchant_id", "m1", pd.Timestamp(when, tz="UTC"))
        assert row is not None
        return (
            row["merchant_tx_count_30d"],
            row["merchant_chargeback_count_30d"],
            row["merchant_chargeback_rate_30d"],
        )

    assert risk("2026-01-01 23:00") == (0, 0, 0.0)  # the day's snapshot was taken at midnight
    assert risk("2026-01-02 00:00") == (2, 0, 0.0)
    assert risk("2026-01-05 23:59") == (2, 0, 0.0)  # reported at 12:00, not yet in a snapshot
    assert risk("2026-01-06 00:00") == (2, 1, 0.5)
    assert risk("2026-01-31 00:00") == (2, 1, 0.5)  # the window starts at Jan 1, 00:00
    assert risk("2026-02-01 00:00") == (0, 0, 0.0)  # both transactions left the 30 d window


def test_merchant_risk_ignores_a_label_reported_after_its_window() -> None:
    tx = transactions([("c1", "m1", pd.Timestamp("2026-01-01 10:00", tz="UTC"), 10.0, "d")])
    chargebacks = pd.DataFrame(
        {
            "transaction_id": [1],
            "card_id": ["c1"],
            "merchant_id": ["m1"],
            "transaction_timestamp": pd.to_datetime(["2026-01-01 10:00"], utc=True),
            "reported_at": pd.to_datetime(["2026-02-05"], utc=True),
        }
    )
    merchants = pd.DataFrame(
        {"merchant_id": ["m1"], "onboarded_at": pd.to_datetime(["2025-01-01"], utc=True)}
    )
    table = fraud.merchant_risk(tx, chargebacks, merchants, refresh=DAY)
    assert table["merchant_chargeback_count_30d"].max() == 0


# --- brute force on random events -----------------------------------------------------------


def random_world(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = 150
    start = pd.Timestamp("2026-01-01", tz="UTC")
    # Minute resolution with collisions, so ties and window edges are common.
    offsets = pd.to_timedelta(rng.integers(0, 12 * 24 * 60, n), unit="min")
    tx = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1),
            "card_id": rng.choice(["c1", "c2", "c3"], n),
            "merchant_id": rng.choice(["m1", "m2", "m3", "m4"], n),
            "event_timestamp": start + offsets,
            "amount": rng.integers(1, 500, n).astype(float),
            "device_id": rng.choice(["d1", "d2", "d3"], n),
            "country": "US",
        }
    )
    fraud_rows = tx.sample(20, random_state=seed)
    chargebacks = pd.DataFrame(
        {
            "transaction_id": fraud_rows["transaction_id"].to_numpy(),
            "card_id": fraud_rows["card_id"].to_numpy(),
            "merchant_id": fraud_rows["merchant_id"].to_numpy(),
            "transaction_timestamp": fraud_rows["event_timestamp"].to_numpy(),
            "reported_at": pd.to_datetime(fraud_rows["event_timestamp"].to_numpy(), utc=True)
            + pd.to_timedelta(rng.integers(1, 6 * 24, 20), unit="h"),
        }
    )
    for column in ("transaction_timestamp", "reported_at"):
        chargebacks[column] = pd.to_datetime(chargebacks[column], utc=True)
    cards = pd.DataFrame(
        {
            "card_id": ["c1", "c2", "c3"],
            "home_country": ["US", "GB", "DE"],
            "issued_at": start - pd.Timedelta(days=1),
        }
    )
    merchants = pd.DataFrame(
        {"merchant_id": ["m1", "m2", "m3", "m4"], "onboarded_at": start - pd.Timedelta(days=1)}
    )
    return tx, chargebacks, cards, merchants


def probe_times(tx: pd.DataFrame, seed: int) -> list[pd.Timestamp]:
    """Instants that sit on every kind of edge: an event, just after it, a window later."""
    rng = np.random.default_rng(seed + 100)
    base = tx["event_timestamp"].sample(25, random_state=seed).tolist()
    edges = [
        pd.Timedelta(0),
        US,
        pd.Timedelta(hours=1),
        pd.Timedelta(hours=1) + US,
        pd.Timedelta(days=1) + US,
        pd.Timedelta(days=7),
    ]
    probes = [b + e for b in base for e in edges]
    start = tx["event_timestamp"].min()
    probes += [start + pd.Timedelta(minutes=int(m)) for m in rng.integers(-60, 45 * 24 * 60, 40)]
    return probes


@pytest.mark.parametrize("seed", range(3))
def test_velocity_and_profile_match_brute_force(seed: int) -> None:
    tx, _, cards, _ = random_world(seed)
    velocity = fraud.card_velocity(tx)
    profile = fraud.card_profile(tx, cards)
    devices = fraud.card_devices(tx)
    for q in probe_times(tx, seed):
        for card in ("c1", "c2", "c3"):
            mine = tx[(tx["card_id"] == card) & (tx["event_timestamp"] < q)]
            v = at(velocity, "card_id", card, q)
            for label, width in (("1h", "1h"), ("24h", "24h"), ("7d", "7D")):
                window = mine[mine["event_timestamp"] >= q - pd.Timedelta(width)]
                assert (v[f"card_tx_count_{label}"] if v else 0) == len(window), (card, q, label)
                assert (v[f"card_tx_amount_{label}"] if v else 0.0) == pytest.approx(
                    window["amount"].sum()
                )
            day = mine[mine["event_timestamp"] >= q - pd.Timedelta("24h")]
            assert (v["card_distinct_merchants_24h"] if v else 0) == day["merchant_id"].nunique()
            if not mine.empty:
                assert (
                    v is not None
                    and v["card_last_tx_epoch_s"] == mine["event_timestamp"].max().timestamp()
                )

            p = at(profile, "card_id", card, q)
            assert p is not None  # every card was issued before the probes
            month = mine[mine["event_timestamp"] >= q - pd.Timedelta("30D")]
            assert p["card_tx_count_30d"] == len(month)
            assert p["card_amount_mean_30d"] == pytest.approx(
                month["amount"].mean() if len(month) else 0.0
            )
            std = month["amount"].std(ddof=1) if len(month) > 1 else 0.0
            assert p["card_amount_std_30d"] == pytest.approx(std, abs=1e-9)
            d = at(devices, "card_id", card, q)
            known = list(
                dict.fromkeys(mine.sort_values("event_timestamp", kind="stable")["device_id"])
            )
            assert (d["card_known_devices"] if d else []) == known


@pytest.mark.parametrize("seed", range(3))
def test_merchant_risk_matches_brute_force(seed: int) -> None:
    tx, chargebacks, _, merchants = random_world(seed)
    table = fraud.merchant_risk(tx, chargebacks, merchants, refresh=DAY)
    for q in probe_times(tx, seed):
        snapshot = q.floor("D")
        for merchant in ("m1", "m2", "m3", "m4"):
            row = at(table, "merchant_id", merchant, q)
            assert row is not None
            window_start = snapshot - pd.Timedelta("30D")
            mine = tx[
                (tx["merchant_id"] == merchant)
                & (tx["event_timestamp"] < snapshot)
                & (tx["event_timestamp"] >= window_start)
            ]
            labels = chargebacks[
                (chargebacks["merchant_id"] == merchant)
                & (chargebacks["reported_at"] < snapshot)
                & (chargebacks["transaction_timestamp"] >= window_start)
            ]
            assert row["merchant_tx_count_30d"] == len(mine), (merchant, q)
            assert row["merchant_chargeback_count_30d"] == len(labels), (merchant, q)


@pytest.mark.parametrize("seed", range(3))
def test_future_events_and_labels_do_not_change_the_past(seed: int) -> None:
    """Point in time: add transactions after t and labels reported after t; nothing at or
    before t moves in any table."""
    tx, chargebacks, cards, merchants = random_world(seed)
    t = tx["event_timestamp"].quantile(0.5)
    future_tx = transactions(
        [("c1", "m1", t + pd.Timedelta(minutes=m), 999.0, "new") for m in (0, 1, 90)]
    )
    future_tx["transaction_id"] += 10_000
    late_label = pd.DataFrame(
        {
            "transaction_id": [tx["transaction_id"].iloc[0]],
            "card_id": [tx["card_id"].iloc[0]],
            "merchant_id": [tx["merchant_id"].iloc[0]],
            "transaction_timestamp": [tx["event_timestamp"].min()],
            "reported_at": [t + pd.Timedelta(seconds=1)],
        }
    )
    more_tx = pd.concat([tx, future_tx], ignore_index=True)
    more_labels = pd.concat([chargebacks, late_label], ignore_index=True)
    before = {
        "velocity": (fraud.card_velocity(tx), "card_id"),
        "profile": (fraud.card_profile(tx, cards), "card_id"),
        "devices": (fraud.card_devices(tx), "card_id"),
        "risk": (fraud.merchant_risk(tx, chargebacks, merchants, refresh=DAY), "merchant_id"),
    }
    after = {
        "velocity": fraud.card_velocity(more_tx),
        "profile": fraud.card_profile(more_tx, cards),
        "devices": fraud.card_devices(more_tx),
        "risk": fraud.merchant_risk(more_tx, more_labels, merchants, refresh=DAY),
    }
    for name, (table, key) in before.items():
        for entity in table[key].unique():
            for q in (t, t - US, t - pd.Timedelta(hours=5)):
                assert at(table, key, entity, q) == at(after[name], key, entity, q), (
                    name,
                    entity,
                    q,
                )
    # ...while the same additions just before t do move it (the check can fail).
    moved = fraud.card_velocity(
        pd.concat([tx, transactions([("c1", "m1", t - pd.Timedelta(minutes=1), 1.0, "d")])])
    )
    assert at(moved, "card_id", "c1", t) != at(before["velocity"][0], "card_id", "c1", t)
