"""Sliding-window arithmetic over per-entity event streams, evaluated exactly at any instant.

Conventions every feature table follows (and the point-in-time tests rely on):

- Times are int64 microseconds since the epoch, UTC.
- A feature "as of q" sees the events strictly before q: a window of width w covers
  ``[q - w, q)``. So a transaction never counts towards its own features, and the value a
  training row gets at time t is the value the online store held just before t.
- A window aggregate is a step function of q. It changes only at ``s + 1 µs`` (event s enters)
  and ``s + w + 1 µs`` (event s leaves). A feature table holds one row per change point, so
  Feast's "latest row at or before t" reproduces the exact value at every t.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

ONE_US = 1
US_PER_SECOND = 1_000_000


def to_us(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    series = pd.Series(times)
    if series.dt.tz is None:
        series = series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()


def from_us(times_us: np.ndarray) -> pd.Series:
    """int64 microseconds since the epoch as a ``datetime64[us, UTC]`` series."""
    return pd.Series(pd.to_datetime(np.asarray(times_us, dtype="int64"), unit="us", utc=True))


def epoch_seconds_us(times_us: np.ndarray) -> np.ndarray:
    """Microseconds as float seconds, computed the one way the online path computes them too."""
    return np.asarray(times_us, dtype="int64") / US_PER_SECOND


def ceil_to_boundary(times_us: np.ndarray, period_us: int) -> np.ndarray:
    """The first multiple of `period_us` at or after each time (batch refresh instants, UTC)."""
    times_us = np.asarray(times_us, dtype="int64")
    return -((-times_us) // period_us) * period_us


def rank_before(
    data_keys: np.ndarray, data_times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray
) -> np.ndarray:
    """For each query (k, q): how many data points have key < k, or key == k and time < q.

    `data_*` must be sorted by (key, time). The answer indexes the data's running sums, so
    ``rank(k, q) - rank(k, q - w)`` counts the events of k in ``[q - w, q)``.
    """
    data_keys = np.asarray(data_keys, dtype="int64")
    data_times = np.asarray(data_times, dtype="int64")
    query_keys = np.asarray(query_keys, dtype="int64")
    query_times = np.asarray(query_times, dtype="int64")
    if not len(data_keys) or not len(query_keys):
        return np.zeros(len(query_keys), dtype="int64")
    low = min(int(data_times.min()), int(query_times.min()))
    span = max(int(data_times.max()), int(query_times.max())) - low + 1
    n_keys = max(int(data_keys.max()), int(query_keys.max())) + 1
    if min(int(data_keys.min()), int(query_keys.min())) >= 0 and n_keys * span < 2**62:
        # (key, time) packed into one int64 keeps the order: one binary search answers it.
        packed = data_keys * span + (data_times - low)
        return np.searchsorted(packed, query_keys * span + (query_times - low), side="left")
    n = len(data_keys)
    keys = np.concatenate([data_keys, query_keys])
    times = np.concatenate([data_times, query_times])
    is_data = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(len(query_keys), dtype=np.int8)])
    # At equal (key, time) the query sorts first, so an event at exactly q is not "before q".
    order = np.lexsort((is_data, times, keys))
    data_in_order = is_data[order]
    data_before = np.cumsum(data_in_order, dtype=np.int64) - data_in_order
    is_query = data_in_order == 0
    ranks = np.empty(len(query_keys), dtype=np.int64)
    ranks[order[is_query] - n] = data_before[is_query]
    return ranks


@dataclass(frozen=True)
class Timeline:
    """The events of many entities, sorted by (entity code, time), with running sums of values.

    Sums run per entity, in time order, from zero: the sum over a window then depends only on
    that entity's events up to the window's end, so adding another entity's events, or a later
    event, cannot move an earlier value even in its last bit (the point-in-time tests compare
    exactly).
    """

    keys: np.ndarray
    times: np.ndarray
    before: dict[str, np.ndarray]
    totals: dict[str, np.ndarray]

    @classmethod
    def of(
        cls, keys: np.ndarray, times: np.ndarray, values: dict[str, np.ndarray] | None = None
    ) -> Timeline:
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        order = np.lexsort((times, keys))
        keys, times = keys[order], times[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = first[1:]
        n_keys = int(keys.max()) + 1 if len(keys) else 0
        before, totals = {}, {}
        for name, column in (values or {}).items():
            ordered = np.asarray(column, dtype="float64")[order]
            running = pd.Series(ordered).groupby(keys).cumsum().to_numpy(dtype="float64")
            shifted = np.concatenate([[0.0], running[:-1]])
            before[name] = np.where(first, 0.0, shifted)
            total = np.zeros(n_keys)
            total[keys[last]] = running[last]
            totals[name] = total
        return cls(keys=keys, times=times, before=before, totals=totals)

    def rank(self, query_keys: np.ndarray, query_times: np.ndarray) -> np.ndarray:
        return rank_before(self.keys, self.times, query_keys, query_times)

    def count(
        self, query_keys: np.ndarray, query_times: np.ndarray, width_us: int | None = None
    ) -> np.ndarray:
        """Events of each query's entity in ``[q - width, q)`` (all before q when width is None)."""
        return self.rank(query_keys, query_times) - self._window_start(
            query_keys, query_times, width_us
        )

    def total(
        self,
        value: str,
        query_keys: np.ndarray,
        query_times: np.ndarray,
        width_us: int | None = None,
    ) -> np.ndarray:
        """Sum of `value` over each query's entity's events in ``[q - width, q)``."""
        query_keys = np.asarray(query_keys, dtype="int64")
        hi = self.running(value, query_keys, self.rank(query_keys, query_times))
        lo = self.running(value, query_keys, self._window_start(query_keys, query_times, width_us))
        return np.where(hi == lo, 0.0, hi - lo)

    def running(self, value: str, query_keys: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """Sum of `value` over the query entity's events before `ranks` (a rank inside or just
        past the entity's run of events)."""
        query_keys = np.asarray(query_keys, dtype="int64")
        n = len(self.keys)
        inside = ranks < n
        inside[inside] = self.keys[ranks[inside]] == query_keys[inside]
        out = np.zeros(len(ranks), dtype="float64")
        out[inside] = self.before[value][ranks[inside]]
        totals = self.totals[value]
        past_end = ~inside & (query_keys >= 0) & (query_keys < len(totals))
        out[past_end] = totals[query_keys[past_end]]
        return out

    def last_before(self, query_keys: np.ndarray, query_times: np.ndarray) -> np.ndarray:
        """Index (into the sorted events) of each entity's latest event before q, or -1."""
        hi = self.rank(query_keys, query_times)
        idx = hi - 1
        valid = idx >= 0
        valid[valid] = self.keys[idx[valid]] == np.asarray(query_keys)[valid]
        return np.where(valid, idx, -1)

    def first(self, query_keys: np.ndarray) -> np.ndarray:
        """Rank of each query entity's first event (where its run of events starts)."""
        return np.searchsorted(self.keys, np.asarray(query_keys, dtype="int64"), side="left")

    def _window_start(
        self, query_keys: np.ndarray, query_times: np.ndarray, width_us: int | None
    ) -> np.ndarray:
        """Rank of the first event in each window (the entity's first when unbounded)."""
        if width_us is None:
            return self.first(query_keys)
        return self.rank(query_keys, np.asarray(query_times, dtype="int64") - width_us)


def change_points(
    keys: np.ndarray,
    times: np.ndarray,
    widths_us: Iterable[int],
    *,
    period_us: int | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every instant at which a window aggregate of these events can change, per entity.

    Each event s gives ``s + 1 µs`` and ``s + w + 1 µs`` for every width w. With `period_us`, the
    table is a batch snapshot refreshed every period: each instant rounds up to the next refresh.
    `extra` adds instants as they are (e.g. the moment an entity is created). Returns unique
    (key, time) pairs sorted by key then time.
    """
    keys = np.asarray(keys, dtype="int64")
    times = np.asarray(times, dtype="int64")
    all_keys = [keys]
    all_times = [times + ONE_US]
    for width in widths_us:
        all_keys.append(keys)
        all_times.append(times + width + ONE_US)
    out_times = np.concatenate(all_times)
    if period_us is not None:
        out_times = ceil_to_boundary(out_times, period_us)
    out_keys = np.concatenate(all_keys)
    if extra is not None:
        out_keys = np.concatenate([out_keys, np.asarray(extra[0], dtype="int64")])
        out_times = np.concatenate([out_times, np.asarray(extra[1], dtype="int64")])
    return unique_points(out_keys, out_times)


def unique_points(keys: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (key, time) pairs, sorted by key then time."""
    keys = np.asarray(keys, dtype="int64")
    times = np.asarray(times, dtype="int64")
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (times[1:] != times[:-1])
    return keys[keep], times[keep]


def distinct_in_window(
    keys: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    width_us: int,
    query_keys: np.ndarray,
    query_times: np.ndarray,
) -> np.ndarray:
    """Distinct `values` among each entity's events in ``[q - width, q)``.

    A value is present at q when one of its events s satisfies ``s + 1 <= q < s + width + 1``.
    Merging those intervals per (entity, value) gives +1 where a run starts and -1 where it ends,
    and the distinct count at q is the sum of the entity's steps up to q.
    """
    frame = pd.DataFrame(
        {
            "key": np.asarray(keys, dtype="int64"),
            "value": values,
            "t": np.asarray(times, dtype="int64"),
        }
    ).sort_values(["key", "value", "t"], kind="stable")
    same_pair = (frame["key"].to_numpy()[1:] == frame["key"].to_numpy()[:-1]) & (
        frame["value"].to_numpy()[1:] == frame["value"].to_numpy()[:-1]
    )
    gap = np.diff(frame["t"].to_numpy()) > width_us
    t = frame["t"].to_numpy()
    k = frame["key"].to_numpy()
    starts_run = np.concatenate([[True], ~same_pair | gap])
    ends_run = np.concatenate([~same_pair | gap, [True]])
    step_keys = np.concatenate([k[starts_run], k[ends_run]])
    step_times = np.concatenate([t[starts_run] + ONE_US, t[ends_run] + width_us + ONE_US])
    step_values = np.concatenate([np.ones(starts_run.sum()), -np.ones(ends_run.sum())])
    steps = Timeline.of(step_keys, step_times, {"step": step_values})
    query_keys = np.asarray(query_keys, dtype="int64")
    upto = steps.rank(query_keys, np.asarray(query_times, dtype="int64") + ONE_US)
    return np.rint(steps.running("step", query_keys, upto)).astype("int64")


def drop_unchanged(table: pd.DataFrame, key: str, compare: list[str]) -> pd.DataFrame:
    """Drop rows whose `compare` columns equal the previous row of the same entity.

    Feast serves the latest row at or before t, so a row that repeats its predecessor adds
    nothing but join cost. `table` must be sorted by (key, time).
    """
    if table.empty:
        return table
    same_key = table[key].eq(table[key].shift())
    same_values = pd.Series(True, index=table.index)
    for column in compare:
        current, previous = table[column], table[column].shift()
        same_values &= current.eq(previous) | (current.isna() & previous.isna())
    return table.loc[~(same_key & same_values)].reset_index(drop=True)


def entity_codes(*id_columns: pd.Series) -> tuple[pd.Index, list[np.ndarray]]:
    """One integer code per entity id, shared across the frames that mention it."""
    ids = pd.Index(
        pd.unique(pd.concat([pd.Series(c, dtype="object") for c in id_columns]))
    ).dropna()
    ids = ids.sort_values()
    return ids, [ids.get_indexer(pd.Series(c, dtype="object")).astype("int64") for c in id_columns]
