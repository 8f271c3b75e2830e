"""The fraud fallback's online-feature lookup: Feast on a thread pool of its own, within a
budget."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from features.catalog import EVENT_EPOCH_S
from mlsd.settings import Settings

log = logging.getLogger("serving.fallback")


class OnlineFeatureLookup:
    """The fraud fallback's online-feature lookup: Feast through `features.store`, on two
    threads of its own (Feast is synchronous, and a stuck lookup must not starve the default
    pool), within a budget. Feast takes seconds to import: `warm` does that in the background at
    start, and until it is done lookups report "not ready" at once instead of waiting."""

    def __init__(self, settings: Settings, enabled: bool = True) -> None:
        self.settings = settings
        self.enabled = enabled
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="online-features")
        self._ready = threading.Event()
        self._failed: str | None = None
        self._in_flight = 0

    def warm(self) -> None:
        if self.enabled:
            self._pool.submit(self._warm)

    def _warm(self) -> None:
        try:
            # One throwaway lookup imports Feast, loads its registry and opens the store.
            self._lookup(
                {
                    "card_id": "__warmup__",
                    "merchant_id": "__warmup__",
                    "amount": 1.0,
                    "country": "US",
                    "device_id": "__warmup__",
                    "timestamp": time.time(),
                }
            )
        except Exception as err:  # no feature repo yet: the fallback scores from the request
            self._failed = f"{type(err).__name__}: {err}"[:300]
            log.info("online features unavailable to the fraud fallback: %s", self._failed)
        else:
            self._ready.set()

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        if self._ready.is_set():
            return "ready"
        return f"unavailable ({self._failed})" if self._failed else "warming"

    async def fraud_features(
        self, request: Mapping[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """The fraud_scoring features of a request, or None (not ready, failed, too slow)."""
        # Two threads: more waiting lookups would only time out, so they are not queued. A
        # lookup holds its thread until Feast returns, past the caller's budget: the count
        # drops when the thread is free, not when the caller stops waiting.
        if not self._ready.is_set() or self._in_flight >= 2:
            return None
        self._in_flight += 1
        lookup = asyncio.get_running_loop().run_in_executor(self._pool, self._lookup, dict(request))
        lookup.add_done_callback(self._thread_free)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(lookup)
        except Exception as err:
            log.debug("online feature lookup failed: %r", err)
            return None

    def _thread_free(self, _: asyncio.Future[Any]) -> None:
        self._in_flight -= 1

    def _lookup(self, request: dict[str, Any]) -> dict[str, Any]:
        from features.store import online_features

        return online_features(
            {"card_id": request["card_id"], "merchant_id": request["merchant_id"]},
            {
                "amount": request["amount"],
                "country": request["country"],
                "device_id": request["device_id"],
                EVENT_EPOCH_S: float(request["timestamp"]),  # epoch seconds
            },
            "fraud_scoring",
            settings=self.settings,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
