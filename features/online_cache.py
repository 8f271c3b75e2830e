"""A short-lived cache of online rows, for views whose rows change only when materialised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class OnlineFeatureCache:
    """Recently read online rows of some views, per entity key, for `ttl_s` seconds.

    For views whose rows change only when they are materialised (a catalogue's item
    statistics), a model server that reads the same hundred candidates for every request can
    reuse them for a few seconds: a row is then at most `ttl_s` staler than the store. Only the
    views named are cached; the others are read every time. Bounded: past `max_keys` entries
    the oldest are dropped (with one time to live, the first inserted expire first)."""

    def __init__(self, views: Sequence[str], ttl_s: float, max_keys: int = 50_000) -> None:
        self.views = frozenset(views)
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._rows: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, view: str, key: str, now: float) -> dict[str, Any] | None:
        entry = self._rows.get((view, key))
        if entry is None or entry[0] <= now:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, view: str, key: str, row: dict[str, Any], now: float) -> None:
        rows = self._rows
        rows.pop((view, key), None)  # re-inserted at the end: insertion order = expiry order
        while rows and (len(rows) >= self.max_keys or next(iter(rows.values()))[0] <= now):
            del rows[next(iter(rows))]
        rows[(view, key)] = (now + self.ttl_s, row)
