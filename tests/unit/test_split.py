"""The time split's windows, and the clear refusal of a window a model cannot be trained on."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipeline.split import assign_windows, plan_time_split, require_both_classes

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def hourly(days: int) -> pd.Series:
    return pd.Series(pd.date_range(T0, periods=24 * days, freq="h"))


def test_the_windows_follow_each_other_in_time():
    split = plan_time_split(T0, T0 + dt.timedelta(days=10), calibrate_days=2, validate_days=3)
    windows = assign_windows(hourly(12), split)
    assert windows.value_counts().to_dict() == {
        "train": 24 * 5,
        "validate": 24 * 3,
        "calibrate": 24 * 2,
        "outside": 24 * 2,
    }
    order = windows[windows != "outside"].drop_duplicates().tolist()
    assert order == ["train", "calibrate", "validate"]


def test_too_short_a_history_is_refused():
    with pytest.raises(ValueError, match="not enough history"):
        plan_time_split(T0, T0 + dt.timedelta(days=4), calibrate_days=2, validate_days=3)


def test_a_window_without_both_classes_is_named_with_its_counts():
    split = plan_time_split(T0, T0 + dt.timedelta(days=10), calibrate_days=2, validate_days=3)
    times = hourly(10)
    windows = assign_windows(times, split)
    labels = pd.Series(0, index=times.index)
    labels[times.dt.hour == 3] = 1  # a fraud a day, every window
    require_both_classes(windows, labels, split)  # sound: no error

    quarantined = windows != "calibrate"  # the calibration days never landed
    with pytest.raises(ValueError) as err:
        require_both_classes(windows[quarantined], labels[quarantined], split)
    assert "calibrate [2026-03-06 00:00, 2026-03-08 00:00) holds 0 rows" in str(err.value)
    assert "train [" not in str(err.value) and "validate [" not in str(err.value)

    no_fraud = labels.where(windows != "validate", 0)
    with pytest.raises(ValueError, match=r"validate .* holds 72 rows, 0 of them positive"):
        require_both_classes(windows, no_fraud, split)
