"""The sliding-window arithmetic behind every feature table, against hand-counted answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.windows import (
    Timeline,
    ceil_to_boundary,
    change_points,
    distinct_in_window,
    drop_unchanged,
    entity_codes,
    rank_before,
)

HOUR = 3_600_000_000


def test_rank_counts_events_strictly_before_the_query() -> None:
    keys = np.array([0, 0, 0, 1])
    times = np.array([10, 20, 30, 5])
    ranks = rank_before(keys, times, np.array([0, 0, 0, 1, 1, 2]), np.array([10, 11, 31, 5, 6, 0]))
    # An event at exactly q is not "before q"; keys sort before later keys.
    assert ranks.tolist() == [0, 1, 3, 3, 4, 4]


def test_timeline_window_count_total_and_last() -> None:
    timeline = Timeline.of(
        np.array([0, 0, 0, 1]),
        np.array([100, 200, 300, 150]),
        {"x": np.array([1.0, 2.0, 4.0, 8.0])},
    )
    q_keys, q_times = np.array([0, 0, 0, 1, 1]), np.array([300, 301, 1000, 150, 151])
    assert timeline.count(q_keys, q_times, 150).tolist() == [1, 2, 0, 0, 1]
    assert timeline.total("x", q_keys, q_times, 150).tolist() == [2.0, 6.0, 0.0, 0.0, 8.0]
    assert timeline.count(q_keys, q_times, None).tolist() == [2, 3, 3, 0, 1]
    last = timeline.last_before(q_keys, q_times)
    assert [timeline.times[i] if i >= 0 else None for i in last] == [200, 300, 300, None, 150]


def test_change_points_enter_and_leave_one_microsecond_after() -> None:
    keys, times = change_points(np.array([0, 0]), np.array([0, 5]), [10])
    assert list(zip(keys.tolist(), times.tolist(), strict=True)) == [
        (0, 1),
        (0, 6),
        (0, 11),
        (0, 16),
    ]


def test_change_points_round_up_to_the_refresh() -> None:
    keys, times = change_points(np.array([3]), np.array([HOUR - 1]), [HOUR], period_us=HOUR)
    assert keys.tolist() == [3, 3]
    assert times.tolist() == [HOUR, 2 * HOUR]
    assert ceil_to_boundary(np.array([0, 1, HOUR]), HOUR).tolist() == [0, HOUR, HOUR]


@pytest.mark.parametrize("seed", range(6))
def test_distinct_in_window_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 80
    keys = rng.integers(0, 4, n)
    times = rng.integers(0, 50, n) * 7
    values = rng.choice(["a", "b", "c", "d"], n).astype(object)
    width = 60
    q_keys = rng.integers(0, 5, 300)
    q_times = rng.integers(-10, 500, 300)
    got = distinct_in_window(keys, times, values, width, q_keys, q_times)
    for k, q, g in zip(q_keys, q_times, got, strict=True):
        in_window = (keys == k) & (times < q) & (times >= q - width)
        assert g == len(set(values[in_window])), (k, q)


def test_drop_unchanged_keeps_first_row_per_entity_and_every_change() -> None:
    table = pd.DataFrame(
        {"k": ["a", "a", "a", "b", "b"], "t": [1, 2, 3, 1, 2], "v": [1, 1, 2, 1, np.nan]}
    )
    kept = drop_unchanged(table, "k", ["v"])
    assert kept[["k", "t"]].values.tolist() == [["a", 1], ["a", 3], ["b", 1], ["b", 2]]


def test_entity_codes_are_shared_across_frames() -> None:
    ids, (a, b) = entity_codes(pd.Series(["x", "y"]), pd.Series(["y", "z"]))
    assert ids.tolist() == ["x", "y", "z"]
    assert a.tolist() == [0, 1] and b.tolist() == [1, 2]


def test_rank_gives_the_same_answer_packed_or_sorted() -> None:
    """Small spans take a packed binary search; negative keys force the merge sort."""
    rng = np.random.default_rng(4)
    keys = np.sort(rng.integers(0, 5, 200))
    times = rng.integers(0, 1_000, 200)
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    q_keys, q_times = rng.integers(0, 6, 500), rng.integers(-50, 1_100, 500)
    packed = rank_before(keys, times, q_keys, q_times)
    merged = rank_before(keys - 10, times, q_keys - 10, q_times)
    assert packed.tolist() == merged.tolist()
    brute = [
        int(np.sum((keys < k) | ((keys == k) & (times < q))))
        for k, q in zip(q_keys, q_times, strict=True)
    ]
    assert packed.tolist() == brute
