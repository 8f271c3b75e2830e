"""What the admin API does to routing: pick the challenger, apply one transition of the routing
state (registry first, then the state, under one lock), and report a product's routing and its
arms' windows of the prediction log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

from mlsd.registry import ModelRegistry
from serving.names import Product, served_name
from serving.prediction_log import PredictionLogWriter, Role
from serving.router.discovery import RegistryLink
from serving.router.servers import ModelServers
from serving.routing_state import ProductRouting, RoutingConflict, RoutingStore
from serving.schemas import AdminAnswer
from serving.traffic import ARMS, window_stats

log = logging.getLogger("serving.router")

# How long a canary verdict waits for a challenger's reference scores from the registry, and
# how long after a failed read it judges without them before asking again: a verdict is read
# every rollout.poll_seconds, and a slow registry must not stall the canary's controller.
REFERENCE_WAIT_SECONDS = 5.0
REFERENCE_RETRY_SECONDS = 30.0


class RoutingControl:
    """The admin side of the router; `writer` gives the prediction log's writer once started."""

    def __init__(
        self,
        store: RoutingStore,
        registry: RegistryLink,
        servers: ModelServers,
        writer: Callable[[], PredictionLogWriter],
    ) -> None:
        self.store = store
        self.registry = registry
        self.servers = servers
        self.writer = writer
        self._lock = asyncio.Lock()
        self._reference_scores: dict[tuple[Product, int], tuple[float, ...] | None] = {}
        self._reference_reads: dict[tuple[Product, int], asyncio.Task[Any]] = {}
        self._reference_retry_at: dict[tuple[Product, int], float] = {}

    async def challenger_version(self, product: Product, requested: int | None) -> int:
        """The version named, which must be in the registry (404 naming it when not: a client's
        mistake, not the model server's), else the registry's @challenger, else the routing's."""
        if requested is not None:
            if self.registry.uri:
                name = self.registry.names[product]
                try:
                    exists = await asyncio.to_thread(
                        self.registry.client().version_exists, name, str(requested)
                    )
                except Exception as err:  # the registry did not answer: the platform's fault
                    raise HTTPException(502, f"registry unavailable: {err}"[:300]) from err
                if not exists:
                    raise HTTPException(
                        404, f"version: {name} has no version {requested} in the registry"
                    )
            return requested
        if self.registry.uri:
            name = self.registry.names[product]
            version = await asyncio.to_thread(self.registry.client().version_of, name, "challenger")
            if version is not None:
                return int(version)
        current = self.store[product].challenger
        if current is not None:
            return current
        raise HTTPException(
            409,
            f"{product} has no challenger (no @challenger in the registry): name one with "
            '"version" in the body (`mlsd rollout start --version N`)',
        )

    async def change_routing(
        self,
        product: Product,
        transition: Callable[[ProductRouting], ProductRouting],
        action: str | None,
        registry_move: Callable[[ModelRegistry, ProductRouting], None] | None = None,
    ) -> AdminAnswer:
        """Apply one transition: registry first (when configured: it is the truth for aliases),
        then the routing state, persisted before the answer. `action` None: the one the
        transition recorded (decided under the lock, on the state it applies to)."""
        async with self._lock:
            current = self.store[product]
            try:
                updated = transition(current)
            except RoutingConflict as err:
                raise HTTPException(409, str(err)) from err
            if registry_move is not None and self.registry.uri:
                try:
                    await asyncio.to_thread(registry_move, self.registry.client(), current)
                except Exception as err:
                    raise HTTPException(
                        502, f"registry {self.registry.uri}: {type(err).__name__}: {err}"
                    ) from err
            self.store.put(updated)
            if action is None:
                action = updated.history[-1].action
            log.info(
                "%s %s: %s", product, action, updated.history[-1].detail if updated.history else ""
            )
            return AdminAnswer(product=product, action=action, routing=self.routing_status(product))

    def routing_status(self, product: Product) -> dict[str, Any]:
        routing = self.store[product]
        name = self.registry.names[product]
        out = routing.model_dump(mode="json", exclude={"history"})
        out["registered_name"] = name
        out["loaded"] = sorted(self.servers.loaded[product])
        shadow_server = self.servers.shadow_servers.get(product)
        out["shadow_server"] = (
            "the model server" if shadow_server is None else shadow_server.base_url
        )
        out["models"] = {
            arm: served_name(product, v)
            for arm in ARMS
            if (v := routing.arm_version(arm)) is not None
        }
        out["breakers"] = {
            m: s for m, s in self.servers.breakers.states().items() if m.startswith(f"{product}-v")
        }
        out["history"] = [e.model_dump(mode="json") for e in routing.history[-10:]]
        return out

    async def reference_scores(self, product: Product, version: int) -> tuple[float, ...] | None:
        """The scores in version `version`'s monitoring reference (what it gave its data's latest
        days when trained), read from the registry once per version (one read at a time).
        None without a registry or a logged reference, and None while the read takes longer
        than REFERENCE_WAIT_SECONDS or after it failed (asked again REFERENCE_RETRY_SECONDS
        later): the canary then holds the challenger to the champion's scores alone, the
        stricter rule."""
        key = (product, version)
        if key in self._reference_scores:
            return self._reference_scores[key]
        if not self.registry.uri or time.monotonic() < self._reference_retry_at.get(key, 0.0):
            return None
        read = self._reference_reads.get(key)
        if read is None:
            read = self._reference_reads[key] = asyncio.create_task(self._read_reference(key))
        try:
            return await asyncio.wait_for(asyncio.shield(read), REFERENCE_WAIT_SECONDS)
        except TimeoutError:
            return None

    async def _read_reference(self, key: tuple[Product, int]) -> tuple[float, ...] | None:
        product, version = key
        try:
            frame = await asyncio.to_thread(
                self.registry.client().reference, self.registry.names[product], str(version)
            )
        except Exception as err:  # the registry did not answer: judge without it for a while
            log.warning("no reference scores for %s v%s: %s", product, version, err)
            self._reference_retry_at[key] = time.monotonic() + REFERENCE_RETRY_SECONDS
            return None
        finally:
            self._reference_reads.pop(key, None)
        scores = None if frame is None or "score" not in frame else tuple(frame["score"].tolist())
        self._reference_scores[key] = scores
        return scores

    async def arm_windows(self, product: Product, since: float, until: float) -> dict[str, Any]:
        """Both arms' window stats (served rows; shadow rows when a shadow runs)."""
        routing = self.store[product]
        writer = self.writer()
        log_store = writer.log
        await writer.flush()
        champion_rows = await log_store.window(product, "champion", since, until, role="served")
        challenger_role: Role = "shadow" if routing.shadow and routing.split is None else "served"
        challenger_rows = await log_store.window(
            product, "challenger", since, until, role=challenger_role
        )
        return {
            "champion": window_stats(champion_rows),
            "challenger": window_stats(challenger_rows, shadow_copies=challenger_role == "shadow"),
            "challenger_role": challenger_role,
        }
