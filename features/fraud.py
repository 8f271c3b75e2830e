"""The fraud feature tables, computed from raw card events: pure functions of pandas frames.

Every table has one row per (entity, instant at which a feature changes), so a point-in-time
join at any t returns the exact value as of t (see ``features.windows`` for the conventions).
Column names and windows come from ``features.catalog``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from features.catalog import (
    DISTINCT_MERCHANTS_WINDOW,
    EVENT_TIMESTAMP,
    MERCHANT_RISK_WINDOW,
    PROFILE_WINDOW,
    VELOCITY_WINDOWS,
)
from features.windows import (
    ONE_US,
    Timeline,
    change_points,
    distinct_in_window,
    drop_unchanged,
    entity_codes,
    epoch_seconds_us,
    from_us,
    to_us,
    unique_points,
)


def _us(width: dt.timedelta) -> int:
    return int(width / dt.timedelta(microseconds=1))


def _frame(
    join_key: str, ids: pd.Index, keys: np.ndarray, times: np.ndarray, columns: dict
) -> pd.DataFrame:
    frame = pd.DataFrame({join_key: ids.to_numpy()[keys], EVENT_TIMESTAMP: from_us(times)})
    for name, values in columns.items():
        frame[name] = values
    return frame


def card_velocity(transactions: pd.DataFrame) -> pd.DataFrame:
    """Per card: transaction counts and amounts over 1 h / 24 h / 7 d, distinct merchants over
    24 h, and the time of the previous transaction, each as of every instant it changes."""
    ids, (codes,) = entity_codes(transactions["card_id"])
    times = to_us(transactions[EVENT_TIMESTAMP])
    timeline = Timeline.of(
        codes, times, {"amount": transactions["amount"].to_numpy(dtype="float64")}
    )
    widths = {label: _us(w) for label, w in VELOCITY_WINDOWS.items()}
    distinct_label, distinct_width = DISTINCT_MERCHANTS_WINDOW
    keys, at = change_points(codes, times, [*widths.values(), _us(distinct_width)])

    columns: dict[str, np.ndarray] = {}
    for label, width in widths.items():
        columns[f"card_tx_count_{label}"] = timeline.count(keys, at, width)
        columns[f"card_tx_amount_{label}"] = timeline.total("amount", keys, at, width)
    columns[f"card_distinct_merchants_{distinct_label}"] = distinct_in_window(
        codes,
        times,
        transactions["merchant_id"].to_numpy(dtype="object"),
        _us(distinct_width),
        keys,
        at,
    )
    last = timeline.last_before(keys, at)
    columns["card_last_tx_epoch_s"] = np.where(
        last >= 0, epoch_seconds_us(timeline.times[np.maximum(last, 0)]), np.nan
    )
    table = _frame("card_id", ids, keys, at, columns)
    return drop_unchanged(table, "card_id", list(columns))


def card_profile(transactions: pd.DataFrame, cards: pd.DataFrame) -> pd.DataFrame:
    """Per card: count, mean and spread of amount over 30 d and the home country, as of issue
    and of every instant they change."""
    label, width = PROFILE_WINDOW
    ids, (codes, card_codes) = entity_codes(transactions["card_id"], cards["card_id"])
    times = to_us(transactions[EVENT_TIMESTAMP])
    amounts = transactions["amount"].to_numpy(dtype="float64")
    # Squares are summed around each card's first amount (known from then on, so no later
    # event can move it), which keeps the variance from cancelling away.
    first = pd.DataFrame({"key": codes, "t": times, "amount": amounts})
    first = first.sort_values(["key", "t"], kind="stable").drop_duplicates("key", keep="first")
    shift = np.zeros(len(ids))
    shift[first["key"].to_numpy()] = first["amount"].to_numpy()
    centred = amounts - shift[codes]
    timeline = Timeline.of(codes, times, {"x": centred, "x2": centred**2})
    keys, at = change_points(
        codes, times, [_us(width)], extra=(card_codes, to_us(cards["issued_at"]))
    )

    n = timeline.count(keys, at, _us(width))
    s1 = timeline.total("x", keys, at, _us(width))
    s2 = timeline.total("x2", keys, at, _us(width))
    safe_n = np.maximum(n, 1)
    mean = np.where(n > 0, s1 / safe_n + shift[keys], 0.0)
    variance = np.where(n > 1, (s2 - s1**2 / safe_n) / np.maximum(n - 1, 1), 0.0)
    std = np.sqrt(np.clip(variance, 0.0, None))

    home = pd.Series(cards["home_country"].to_numpy(), index=cards["card_id"].to_numpy())
    home = home[~home.index.duplicated(keep="last")]
    table = _frame(
        "card_id",
        ids,
        keys,
        at,
        {
            f"card_tx_count_{label}": n,
            f"card_amount_mean_{label}": mean,
            f"card_amount_std_{label}": std,
            "card_home_country": pd.Series(ids.to_numpy()[keys]).map(home).to_numpy(dtype="object"),
        },
    )
    return drop_unchanged(table, "card_id", list(table.columns[2:]))


def card_devices(transactions: pd.DataFrame) -> pd.DataFrame:
    """Per card: the devices it has been used from, from the instant after each first use."""
    ids, (codes,) = entity_codes(transactions["card_id"])
    first_use = (
        pd.DataFrame(
            {
                "key": codes,
                "t": to_us(transactions[EVENT_TIMESTAMP]),
                "device": transactions["device_id"].to_numpy(),
            }
        )
        .sort_values(["key", "t"], kind="stable")
        .drop_duplicates(["key", "device"], keep="first")
    )
    keys, at = unique_points(first_use["key"].to_numpy(), first_use["t"].to_numpy() + ONE_US)
    # Already in (key, time) order, which Timeline keeps (its sort is stable), so names line up.
    devices = Timeline.of(first_use["key"].to_numpy(), first_use["t"].to_numpy())
    names = first_use["device"].to_numpy(dtype="object")
    n_known = devices.count(keys, at, None)
    start = devices.first(keys)
    known = [names[a : a + b].tolist() for a, b in zip(start, n_known, strict=True)]
    return _frame(
        "card_id", ids, keys, at, {"card_known_devices": known, "card_n_known_devices": n_known}
    )


def merchant_risk(
    transactions: pd.DataFrame,
    chargebacks: pd.DataFrame,
    merchants: pd.DataFrame,
    *,
    refresh: dt.timedelta,
) -> pd.DataFrame:
    """Per merchant, at every refresh instant q (UTC-aligned): transactions in ``[q - 30 d, q)`` (MERCHANT_RISK_WINDOW)
    and how many of them have a chargeback reported before q.

    A label counts only once known (``reported_at < q``), so a snapshot never holds a label from
    its future; and it leaves the window with its transaction. A batch snapshot, not event-driven:
    merchant risk moves slowly, and Feast's parquet join costs grow with rows per entity.
    """
    label, width = MERCHANT_RISK_WINDOW
    w, period = _us(width), _us(refresh)
    ids, (tx_codes, cb_codes, m_codes) = entity_codes(
        transactions["merchant_id"], chargebacks["merchant_id"], merchants["merchant_id"]
    )
    tx_times = to_us(transactions[EVENT_TIMESTAMP])
    cb_tx_times = to_us(chargebacks["transaction_timestamp"])
    cb_reported = to_us(chargebacks["reported_at"])

    tx_keys, tx_at = change_points(tx_codes, tx_times, [w], period_us=period)
    cb_keys, cb_at = change_points(cb_codes, cb_reported, [], period_us=period)
    keys, at = unique_points(
        np.concatenate([tx_keys, cb_keys, m_codes]),
        np.concatenate([tx_at, cb_at, to_us(merchants["onboarded_at"])]),
    )

    tx_count = Timeline.of(tx_codes, tx_times).count(keys, at, w)
    # A chargeback is counted on reported_at < q <= transaction_timestamp + window: +1 when it
    # becomes known, -1 when its transaction leaves the window (if it was known by then).
    counted = cb_reported < cb_tx_times + w
    step_keys = np.concatenate([cb_codes[counted], cb_codes[counted]])
    step_times = np.concatenate([cb_reported[counted] + ONE_US, cb_tx_times[counted] + w + ONE_US])
    steps = Timeline.of(
        step_keys,
        step_times,
        {"step": np.concatenate([np.ones(counted.sum()), -np.ones(counted.sum())])},
    )
    cb_count = np.rint(steps.running("step", keys, steps.rank(keys, at + ONE_US))).astype("int64")
    rate = np.where(tx_count > 0, cb_count / np.maximum(tx_count, 1), 0.0)

    table = _frame(
        "merchant_id",
        ids,
        keys,
        at,
        {
            f"merchant_tx_count_{label}": tx_count,
            f"merchant_chargeback_count_{label}": cb_count,
            f"merchant_chargeback_rate_{label}": rate,
        },
    )
    return drop_unchanged(table, "merchant_id", list(table.columns[2:]))
