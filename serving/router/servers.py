"""The model servers the router calls: one client per product (and per product with a shadow
server of its own), the versions each hosts, their circuit breakers, and the chain of hops a
request walks through them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import HTTPException

from mlsd.settings import RouterSettings
from serving.fallback import Breakers, ChainResult, Hop, first_answer
from serving.names import PRODUCTS, Product, parse_served_name, served_name
from serving.upstream import UpstreamError, V2Client

PROBE_TIMEOUT_S = 2.0
log = logging.getLogger("serving.router")


def _served_or_none(name: str) -> tuple[str | None, str]:
    """(product, version) of a served name; (None, "") for a name that is not one."""
    try:
        return parse_served_name(name)
    except ValueError:
        return None, ""


def arm_error(hops: Sequence[Hop], result: ChainResult[Any]) -> str | None:
    """Why the arm's own model did not answer (None when it did)."""
    if not hops:
        return "no model version is routed for this arm"
    first = hops[0].model
    failure = next((f for f in result.failures if f.model == first), None)
    return None if failure is None else f"{failure.kind}: {failure.detail}"[:500]


class ModelServers:
    """What the router knows of its model servers; the routing state lives elsewhere."""

    def __init__(
        self,
        config: RouterSettings,
        clients: Mapping[Product, V2Client],
        shadow_clients: Mapping[Product, V2Client] | None = None,
    ) -> None:
        self.config = config
        self.clients = dict(clients)
        # The products with a shadow server of their own (see ModelServerSettings: a full
        # shadow then adds no work to the process that answers); the others' copies go to
        # their own server.
        self.shadow_servers = dict(shadow_clients or {})
        self.breakers = Breakers(
            config.breaker_window,
            config.breaker_min_calls,
            config.breaker_failure_rate,
            config.breaker_cooldown_seconds,
            config.breaker_min_failing_seconds,
        )
        self.loaded: dict[Product, set[int]] = {p: set() for p in PRODUCTS}
        # What a separate shadow server hosts, and its own breakers (same policy): its
        # failures say nothing of the serving server's. Unused when shadows share the server.
        self.shadow_loaded: dict[Product, set[int]] = {p: set() for p in PRODUCTS}
        self.shadow_breakers = dataclasses.replace(self.breakers, by_model={})
        self._prefetching: set[asyncio.Task[None]] = set()  # held, or the loop may drop them

    def server(self, product: Product, shadow: bool) -> tuple[V2Client, set[int], Breakers]:
        """The model server that answers (or, `shadow`, that takes the copies), what it has
        loaded, and its circuit breakers."""
        if shadow and product in self.shadow_servers:
            return self.shadow_servers[product], self.shadow_loaded[product], self.shadow_breakers
        return self.clients[product], self.loaded[product], self.breakers

    async def chain(
        self,
        product: Product,
        hops: Sequence[Hop],
        columns: dict[str, list[Any]],
        request_id: str,
        decode: Callable[[Mapping[str, list[Any]], str], Any],
        shadow: bool = False,
    ) -> ChainResult[Any]:
        """The first hop's answer that comes (see fallback.first_answer), decoded."""
        client, loaded, breakers = self.server(product, shadow)

        async def call(hop: Hop) -> Any:
            outputs = await client.infer(hop.model, columns, hop.timeout_s, request_id)
            return decode(outputs, hop.version)

        result = await first_answer(hops, call, breakers)
        if result.hop is not None:
            loaded.add(int(parse_served_name(result.hop.model)[1]))
        return result

    async def discover(self) -> dict[Product, set[int]]:
        """Which versions each model server has loaded; the products whose server answered,
        with what it hosts."""
        answered: dict[Product, set[int]] = {}
        for product in PRODUCTS:
            if product in self.shadow_servers:
                # A restarted shadow server has lost what the router loaded onto it.
                hosted = await self.hosted(self.shadow_servers[product], product)
                if hosted is not None:
                    self.shadow_loaded[product] = hosted
            versions = await self.hosted(self.clients[product], product)
            if versions is None:
                continue
            self.loaded[product] = versions
            answered[product] = versions
        return answered

    @staticmethod
    async def hosted(client: V2Client, product: Product) -> set[int] | None:
        """The versions of `product` a model server hosts (None: it did not answer)."""
        try:
            names = await client.list_models(PROBE_TIMEOUT_S)
        except UpstreamError:
            return None
        return {int(v) for p, v in map(_served_or_none, names) if p == product}

    async def ensure_loaded(self, product: Product, version: int, shadow: bool = False) -> None:
        """Make sure the model server (`shadow`: the one taking shadow copies) hosts `version`
        (a V2 repository load if it does not)."""
        client, loaded, _ = self.server(product, shadow)
        if version in loaded:
            return
        model = served_name(product, version)
        if not await client.model_ready(model, PROBE_TIMEOUT_S):
            try:
                await client.load(model, self.config.load_timeout_seconds)
            except UpstreamError as err:
                which = "shadow" if client is not self.clients[product] else "model"
                raise HTTPException(
                    502, f"could not load {model} on the {product} {which} server: {err}"
                ) from err
        loaded.add(version)

    def prefetch(self, product: Product, version: int) -> None:
        """Load `version` on the model server that answers, in the background: started with
        a shadow, so the canary that follows it finds the version there (a server reads a
        version in a child process, several seconds on a busy machine: see serving.inference.
        fraud). A failed prefetch only leaves the load to the canary, which then says why."""
        if product not in self.shadow_servers:
            return  # the shadow's copies went to this same server: the version is there
        task = asyncio.create_task(self.ensure_loaded(product, version))
        self._prefetching.add(task)
        task.add_done_callback(self._prefetched)

    async def join_prefetches(self) -> None:
        """Wait for the prefetches under way (tests; a close cancels them instead)."""
        await asyncio.gather(*self._prefetching, return_exceptions=True)

    def _prefetched(self, task: asyncio.Task[None]) -> None:
        self._prefetching.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.warning("prefetch of a challenger failed (the canary will load it): %s", err)

    async def close(self) -> None:
        for task in list(self._prefetching):
            task.cancel()
        for client in [*self.clients.values(), *self.shadow_servers.values()]:
            await client.close()
