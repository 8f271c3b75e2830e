"""The online-row cache: rows expire after their time to live, and the cache stays bounded."""

from __future__ import annotations

from features.store import OnlineFeatureCache


def test_a_row_is_reused_until_its_time_to_live_ends() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=30.0)
    cache.put("item_stats", "i1", {"item_plays_7d": 4}, now=100.0)
    assert cache.get("item_stats", "i1", now=129.9) == {"item_plays_7d": 4}
    assert cache.get("item_stats", "i1", now=130.0) is None  # expired: read the store again
    assert cache.get("item_stats", "i2", now=100.0) is None
    assert cache.get("user_activity", "i1", now=100.0) is None  # keyed by view too
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_full_cache_drops_the_rows_that_expire_first() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=30.0, max_keys=3)
    for i in range(3):
        cache.put("item_stats", f"i{i}", {"n": i}, now=float(i))
    cache.put("item_stats", "i0", {"n": 10}, now=5.0)  # refreshed: now the last to expire
    cache.put("item_stats", "i3", {"n": 3}, now=6.0)  # full: i1, the oldest, goes
    assert cache.get("item_stats", "i1", now=7.0) is None
    assert cache.get("item_stats", "i0", now=7.0) == {"n": 10}
    assert cache.get("item_stats", "i2", now=7.0) == {"n": 2}
    assert cache.get("item_stats", "i3", now=7.0) == {"n": 3}


def test_expired_rows_are_dropped_as_new_ones_arrive() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=10.0)
    cache.put("item_stats", "i0", {"n": 0}, now=0.0)
    cache.put("item_stats", "i1", {"n": 1}, now=5.0)
    cache.put("item_stats", "i2", {"n": 2}, now=12.0)  # i0 expired at 10
    assert len(cache) == 2


def test_a_full_cache_keeps_the_rows_read_most_recently() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=30.0, max_keys=2)
    cache.put("item_stats", "i0", {"n": 0}, now=0.0)
    cache.put("item_stats", "i1", {"n": 1}, now=1.0)
    assert cache.get("item_stats", "i0", now=2.0) == {"n": 0}  # i0 is now the fresher use
    cache.put("item_stats", "i2", {"n": 2}, now=3.0)  # full: i1, least recently used, goes
    assert cache.get_many("item_stats", ["i0", "i1", "i2"], now=4.0) == {
        "i0": {"n": 0},
        "i2": {"n": 2},
    }
    assert len(cache) == 2


def test_many_keys_are_read_and_remembered_as_of_one_instant() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=10.0, max_keys=100)
    cache.put_many("item_stats", {f"i{i}": {"n": i} for i in range(150)}, now=0.0)
    assert len(cache) == 100  # bounded however many arrive at once
    found = cache.get_many("item_stats", [f"i{i}" for i in range(150)], now=9.9)
    assert found == {f"i{i}": {"n": i} for i in range(50, 150)}
    assert (cache.hits, cache.misses) == (100, 50)
    assert cache.get_many("item_stats", ["i60", "i149"], now=10.0) == {}  # all expired at 10
