"""A short-lived cache of online rows, for views whose rows change only when materialised.

The expiry and the size bound are cachetools' ``TTLCache`` (a kept library in place of the
hand-written ordered dict this was); only the clock is ours, so a caller reads a whole slate
as of one instant and a test can name the instant.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cachetools import TTLCache


class OnlineFeatureCache:
    """Recently read online rows of some views, per entity key, for `ttl_s` seconds.

    For views whose rows change only when they are materialised (a catalogue's item
    statistics), a model server that reads the same hundred candidates for every request can
    reuse them for a few seconds: a row is then at most `ttl_s` staler than the store (it
    expires at exactly ``put``'s `now` + `ttl_s`). Only the views named are cached; the others
    are read every time. Bounded: at `max_keys` entries, a new row first drops the expired
    ones, then the least recently used.

    Safe to share between threads (a model server's executor runs requests in several):
    ``TTLCache`` is not, so every call holds one lock."""

    def __init__(self, views: Sequence[str], ttl_s: float, max_keys: int = 50_000) -> None:
        self.views = frozenset(views)
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._now = 0.0
        self._rows: TTLCache[tuple[str, str], dict[str, Any]] = TTLCache(
            maxsize=max_keys, ttl=ttl_s, timer=self._clock
        )
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _clock(self) -> float:
        # The instant of the call in progress (set under the lock): TTLCache asks its timer
        # several times per call, and they must all see the caller's `now`.
        return self._now

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def get(self, view: str, key: str, now: float) -> dict[str, Any] | None:
        return self.get_many(view, [key], now).get(key)

    def get_many(self, view: str, keys: Iterable[str], now: float) -> dict[str, dict[str, Any]]:
        """The rows of `keys` still fresh at `now` (the others are misses), under one lock."""
        rows = self._rows
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._now = now
            for key in keys:
                try:
                    found[key] = rows[(view, key)]
                except KeyError:  # absent or expired
                    self.misses += 1
            self.hits += len(found)
        return found

    def put(self, view: str, key: str, row: dict[str, Any], now: float) -> None:
        self.put_many(view, {key: row}, now)

    def put_many(self, view: str, rows: Mapping[str, dict[str, Any]], now: float) -> None:
        """Remember `rows` (by key) as read at `now`, under one lock."""
        with self._lock:
            self._now = now
            for key, row in rows.items():
                self._rows[(view, key)] = row
