"""What the router learns from outside itself: the registry's aliases (the truth for which
version is champion) and the popularity list it asks the recsys champion for."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from features.catalog import GENRES
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from serving import routing_state as rs
from serving.fallback import PopularityList, recs_answer_from_outputs
from serving.names import PRODUCTS, Product, served_name, version_label
from serving.router.servers import PROBE_TIMEOUT_S, ModelServers
from serving.routing_state import RoutingStore
from serving.upstream import UpstreamError

log = logging.getLogger("serving.router")
POPULARITY_PROBE_USER = "__mlsd_popularity_probe__"  # unknown to every model: the cold-start path


def registry_uri(settings: Settings) -> str | None:
    """The MLflow URI alias moves go to (None: the router keeps routing state alone)."""
    uri = settings.router.registry_uri
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or None


class RegistryLink:
    """The MLflow registry the router follows and moves aliases in (`uri` None: none)."""

    def __init__(self, settings: Settings, store: RoutingStore) -> None:
        self.uri = registry_uri(settings)
        self.names = settings.training.model_names()
        self.store = store
        self._client: ModelRegistry | None = None
        self.error: str | None = None

    def client(self) -> ModelRegistry:
        if self._client is None:
            assert self.uri is not None
            self._client = ModelRegistry(self.uri)
        return self._client

    def _aliases(self) -> dict[Product, dict[str, int | None]]:
        registry = self.client()
        out: dict[Product, dict[str, int | None]] = {}
        for product in PRODUCTS:
            aliases = registry.aliases(self.names[product])
            out[product] = {
                a: int(aliases[a]) if a in aliases else None
                for a in ("champion", "challenger", "previous")
            }
        return out

    async def sync(self, timeout_s: float = 30.0) -> bool:
        """Adopt the registry's aliases (the truth for which version is champion)."""
        try:
            async with asyncio.timeout(timeout_s):
                aliases = await asyncio.to_thread(self._aliases)
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"[:300]
            log.warning("registry %s unavailable: %s", self.uri, self.error)
            return False
        self.error = None
        for product in PRODUCTS:
            current = self.store[product]
            synced = rs.sync_with_registry(current, aliases[product])
            if synced is not current:
                self.store.put(synced)
        return True


async def discover_models(
    servers: ModelServers, store: RoutingStore, registry: RegistryLink
) -> None:
    """Which versions each model server has loaded; with no registry and no saved state, the
    newest loaded version becomes champion (a lab started by hand still routes)."""
    for product, versions in (await servers.discover()).items():
        routing = store[product]
        if routing.champion is None and versions and not registry.uri:
            store.put(rs.adopt_discovered_champion(routing, max(versions)))


class PopularityRefresh:
    """Keeps the popularity fallback's list: the recsys champion's answer for an unknown user
    (its popularity path), overall and per genre."""

    def __init__(
        self,
        settings: Settings,
        store: RoutingStore,
        servers: ModelServers,
        popularity: PopularityList,
    ) -> None:
        self.settings = settings
        self.store = store
        self.servers = servers
        self.popularity = popularity
        self.at = 0.0
        self._lock = asyncio.Lock()

    def due(self) -> bool:
        return time.monotonic() - self.at >= self.settings.router.popularity_refresh_seconds

    async def seed(self) -> None:
        """At start, with no saved list: the champion's, else one from the feature table."""
        if await self.refresh():
            return
        seeded = await asyncio.to_thread(self.popularity.seed_from_feature_table, self.settings)
        if seeded:
            await asyncio.to_thread(self.popularity.save)

    async def refresh(self) -> bool:
        """Ask the recsys champion for an unknown user's list (its popularity path), overall and
        per genre; keep it for the popularity fallback."""
        async with self._lock:  # the start-up seed and the maintenance loop
            return await self._refresh()

    async def _refresh(self) -> bool:
        self.at = time.monotonic()
        champion = self.store["recsys"].champion
        if champion is None:
            return False
        model = served_name("recsys", champion)
        label = version_label("recsys", champion)
        client = self.servers.clients["recsys"]

        async def ask(genre: str | None) -> list[tuple[str, float]]:
            columns: dict[str, list[Any]] = {
                "user_id": [POPULARITY_PROBE_USER],
                "k": [100],
                "event_timestamp": [time.time()],
            }
            if genre is not None:
                columns["genre_hint"] = [genre]
            answer = recs_answer_from_outputs(
                await client.infer(model, columns, PROBE_TIMEOUT_S), label
            )
            return list(answer.items) if answer.path == "popularity" else []

        try:
            overall = await ask(None)
            by_genre = {g: await ask(g) for g in GENRES}
        except (UpstreamError, ValueError, KeyError, IndexError, TypeError) as err:
            log.info("popularity refresh from %s failed: %s", model, err)
            return False
        if not overall:
            return False
        self.popularity.update(overall, by_genre, f"{model} cold-start answer")
        await asyncio.to_thread(self.popularity.save)
        return True
