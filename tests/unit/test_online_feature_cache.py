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


def test_the_cache_drops_its_oldest_half_when_full() -> None:
    cache = OnlineFeatureCache(["item_stats"], ttl_s=30.0, max_keys=10)
    for i in range(10):
        cache.put("item_stats", f"i{i}", {"n": i}, now=0.0)
    cache.put("item_stats", "i10", {"n": 10}, now=0.0)
    assert cache.get("item_stats", "i0", now=1.0) is None
    assert cache.get("item_stats", "i4", now=1.0) is None
    assert cache.get("item_stats", "i5", now=1.0) == {"n": 5}
    assert cache.get("item_stats", "i10", now=1.0) == {"n": 10}
