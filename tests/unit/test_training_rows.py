"""The fraud training rows read stored features as serving reads them."""

from __future__ import annotations

import pandas as pd
import pytest

from features.offline_join import request_clock
from pipeline.fraud_training_set import features_as_served, latest_rows


def payments() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": ["c1", "c2"],
            "event_timestamp": pd.to_datetime(
                ["2026-03-04 15:04:05.000007", "2026-03-05 00:00:00.000000"], utc=True
            ),
        }
    )


def test_features_are_read_as_of_the_days_start_at_the_payments_clock():
    rows = payments()
    served = features_as_served(rows, "day_start")
    assert served["event_timestamp"].tolist() == list(
        pd.to_datetime(["2026-03-04", "2026-03-05"], utc=True)
    )
    # The request's clock, to the microsecond: the on-demand features are computed at it.
    assert served["event_epoch_s"].tolist() == [
        rows["event_timestamp"].iloc[0].value / 1e9,
        rows["event_timestamp"].iloc[1].value / 1e9,
    ]
    assert rows["event_timestamp"].iloc[0].hour == 15  # the caller's rows are left as they were


def test_at_the_payment_the_rows_are_unchanged():
    rows = payments()
    pd.testing.assert_frame_equal(features_as_served(rows, "payment"), rows)


def test_the_reference_rows_are_a_sample_of_the_latest_days_only():
    times = pd.date_range("2026-03-01", periods=10 * 24, freq="h", tz="UTC")
    tx = pd.DataFrame({"transaction_id": range(len(times)), "event_timestamp": times})
    since = times[-1] - pd.Timedelta(days=3)
    rows = latest_rows(tx, since.to_pydatetime(), n=50, seed=3)
    assert len(rows) == 50
    assert (rows["event_timestamp"] > since).all()
    assert not rows["event_timestamp"].is_monotonic_increasing  # a head is a sample too
    pd.testing.assert_frame_equal(rows, latest_rows(tx, since.to_pydatetime(), n=50, seed=3))
    everything = latest_rows(tx, since.to_pydatetime(), n=10_000, seed=3)
    assert len(everything) == 72  # the last 3 days of hourly payments, all of them


def test_a_payment_before_its_days_landing_is_served_the_day_befores_features():
    rows = payments()  # 15:04 on 03-04, midnight on 03-05
    # Landing takes 0.75 day: at 15:04 the 03-03 batch is still landing (until 18:00).
    served = features_as_served(rows, "day_start", landing_delay_days=0.75)
    assert served["event_timestamp"].tolist() == list(
        pd.to_datetime(["2026-03-03", "2026-03-04"], utc=True)
    )
    # Half a day: the 03-03 batch landed at 12:00, before the payment at 15:04.
    half = features_as_served(rows, "day_start", landing_delay_days=0.5)
    assert half["event_timestamp"].tolist()[0] == pd.Timestamp("2026-03-04", tz="UTC")
    # The request's clock is the payment's whatever the delay.
    assert served["event_epoch_s"].tolist() == half["event_epoch_s"].tolist()


def test_a_requests_clock_before_its_lookup_instant_is_refused():
    """A row's own clock (event_epoch_s) may be later than the instant its stored features are
    read as of, never earlier: those features would be from the request's future."""
    rows = features_as_served(payments(), "day_start")
    assert request_clock(rows).tolist() == rows["event_epoch_s"].tolist()
    # A row without a clock of its own is asked at its lookup instant (midnight here).
    partly = rows.assign(event_epoch_s=[rows["event_epoch_s"].iloc[0], None])
    assert request_clock(partly).iloc[1] == pd.Timestamp("2026-03-05", tz="UTC").value / 1e9
    with pytest.raises(ValueError, match="cannot precede"):
        request_clock(rows.assign(event_epoch_s=rows["event_epoch_s"] - 2 * 86_400))
