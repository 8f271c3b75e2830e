"""Time-based splits: train on the past, calibrate and validate on later windows, never at random.

A random split leaks the future (a card's later behaviour informs its earlier score) and hides
drift; a time split reproduces how the model will be used: trained today, scoring tomorrow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TimeSplit:
    """Half-open windows [start, end) in time order: train < calibrate < validate."""

    train_start: dt.datetime
    train_end: dt.datetime
    calibrate_end: dt.datetime
    validate_end: dt.datetime

    @property
    def windows(self) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        return {
            "train": (self.train_start, self.train_end),
            "calibrate": (self.train_end, self.calibrate_end),
            "validate": (self.calibrate_end, self.validate_end),
        }

    def as_params(self) -> dict[str, str]:
        return {
            f"{name}_{edge}": t.isoformat()
            for name, (a, b) in self.windows.items()
            for edge, t in (("start", a), ("end", b))
        }


def plan_time_split(
    first_event: dt.datetime,
    label_cutoff: dt.datetime,
    calibrate_days: float,
    validate_days: float,
) -> TimeSplit:
    """Split [first_event, label_cutoff) so the two later windows have the given lengths.

    `label_cutoff` is the last moment whose labels are trusted (data end minus label maturity):
    a transaction after it may still receive a chargeback, so it is not used at all.
    """
    validate_start = label_cutoff - dt.timedelta(days=validate_days)
    calibrate_start = validate_start - dt.timedelta(days=calibrate_days)
    if calibrate_start <= first_event:
        raise ValueError(
            f"not enough history: need more than {calibrate_days + validate_days} days before "
            f"{label_cutoff.isoformat()} (data starts {first_event.isoformat()})"
        )
    return TimeSplit(first_event, calibrate_start, validate_start, label_cutoff)


def assign_windows(times: pd.Series, split: TimeSplit) -> pd.Series:
    """Name of the window each timestamp falls in ('train', 'calibrate', 'validate' or 'outside')."""
    out = pd.Series("outside", index=times.index, dtype=object)
    for name, (start, end) in split.windows.items():
        out[(times >= start) & (times < end)] = name
    return out


def require_both_classes(windows: pd.Series, labels: pd.Series, split: TimeSplit) -> None:
    """Raise a ValueError naming every window that holds no rows or only one class: a model
    cannot be fitted, calibrated or judged there (scikit-learn would fail deep inside with an
    error about arrays). Quarantined or unlanded days leave such a hole."""
    problems = []
    for name, (start, end) in split.windows.items():
        part = labels[windows == name]
        rows, positives = len(part), int(part.sum())
        if positives == 0 or positives == rows:
            problems.append(
                f"{name} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) holds {rows:,} rows, "
                f"{positives:,} of them positive"
            )
    if problems:
        raise ValueError(
            "cannot train: "
            + "; ".join(problems)
            + ". Each window needs rows of both classes; days that were quarantined or never "
            "landed leave a window empty (`mlsd status` shows what the world landed)."
        )
