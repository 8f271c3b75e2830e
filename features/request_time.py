"""Request time as float epoch seconds: the one conversion the online path and the training
path both use, so on-demand features see the same "now"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def epoch_seconds(value: Any) -> float:
    """A timestamp as float epoch seconds, floored to the microsecond: the one conversion both
    the online path and the training path use, so on-demand features see the same "now"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.value // 1000) / 1_000_000


def epoch_seconds_column(stamps: pd.Series) -> np.ndarray:
    micros = pd.to_datetime(stamps, utc=True).astype("datetime64[ns, UTC]").astype("int64") // 1000
    return micros.to_numpy(dtype="int64") / 1_000_000
