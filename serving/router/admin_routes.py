"""The admin routes rollouts drive (bearer token): status, split, experiment, shadow, canary,
its verdict, promote, rollback and refresh."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query

from mlsd.registry import ModelRegistry
from serving import routing_state as rs
from serving.canary import Verdict, canary_verdict
from serving.names import PRODUCTS, Product
from serving.router.dependencies import RouterDep, require_admin
from serving.routing_state import ProductRouting, RoutingConflict
from serving.schemas import (
    AdminAnswer,
    CanaryPercentRequest,
    CanaryRequest,
    ErrorBody,
    ReasonRequest,
    RollbackRequest,
    ShadowRequest,
    SplitRequest,
)
from serving.traffic import ARMS, experiment_metric

_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not valid UTF-8 or not valid JSON."},
    401: {"model": ErrorBody, "description": "Missing or wrong admin token."},
    404: {"model": ErrorBody, "description": "The version named is not in the registry."},
    409: {"model": ErrorBody, "description": "The call does not fit the current routing."},
    413: {"model": ErrorBody, "description": "Body larger than router.max_body_bytes."},
    502: {
        "model": ErrorBody,
        "description": "The platform failed: a model server could not load a registered "
        "version, or the registry did not answer.",
    },
}


# Marks the operations that may first load a version onto a model server (a V2 repository load,
# which may take up to router.load_timeout_seconds; seconds, not milliseconds, since a server
# reads a version in a child process): the published schema says which calls a client should
# wait longer for.
MAY_LOAD_A_VERSION: dict[str, Any] = {"x-mlsd-may-load-version": True}


def add_admin_routes(app: FastAPI) -> None:
    admin = APIRouter(
        prefix="/admin",
        dependencies=[Depends(require_admin)],
        responses=_ADMIN_ERRORS,
        tags=["admin"],
    )

    @admin.get("/status")
    async def status(router: RouterDep) -> dict[str, Any]:
        """Routing of both products, loaded versions, circuit breakers, queues and counters."""
        writer = router.log_writer
        return {
            "products": {p: router.control.routing_status(p) for p in PRODUCTS},
            "shadow": {**router.shadow.stats.as_dict(), "pending": router.shadow.pending},
            "prediction_log": {
                **writer.stats.as_dict(),
                "pending": writer.pending,
                "type": router.config.prediction_log.type,
            },
            "requests": dict(router.counts),
            "online_features": router.features.status,
            "popularity": {
                "source": router.popularity.source,
                "items": len(router.popularity.overall),
                "updated_at": router.popularity.updated_at,
            },
            "registry": {"uri": router.registry.uri, "error": router.registry.error},
        }

    @admin.get("/{product}/status")
    async def product_status(product: Product, router: RouterDep) -> dict[str, Any]:
        return router.control.routing_status(product)

    @admin.put("/{product}/split", response_model=AdminAnswer, openapi_extra=MAY_LOAD_A_VERSION)
    async def set_split(product: Product, body: SplitRequest, router: RouterDep) -> AdminAnswer:
        """Start (or replace) an A/B experiment: `challenger_percent` of entities, by a sticky
        hash salted with the experiment name, see the challenger. Every prediction logs its
        arm and the experiment."""
        version = await router.control.challenger_version(product, body.version)
        await router.servers.ensure_loaded(product, version)
        return await router.control.change_routing(
            product,
            lambda r: rs.start_experiment(
                r, body.experiment, body.metric, body.challenger_percent, version
            ),
            "experiment_started",
        )

    @admin.delete("/{product}/split", response_model=AdminAnswer)
    async def stop_split(product: Product, router: RouterDep) -> AdminAnswer:
        return await router.control.change_routing(product, rs.stop_split, "split_stopped")

    @admin.get("/{product}/experiment")
    async def experiment(
        product: Product,
        router: RouterDep,
        window_seconds: Annotated[float, Query(gt=0, le=30 * 86400)] = 3600.0,
    ) -> dict[str, Any]:
        """The running experiment's arms over the last `window_seconds`, with its metric."""
        routing = router.store[product]
        if routing.split is None:
            raise HTTPException(409, f"{product} has no split running")
        until = time.time()
        since = max(until - window_seconds, routing.split.started_at)
        windows = await router.control.arm_windows(product, since, until)
        metric = routing.split.metric
        return {
            "split": routing.split.model_dump(),
            "since": since,
            "until": until,
            "arms": {arm: windows[arm].summary() for arm in ARMS},
            "metric": metric,
            "values": {
                arm: experiment_metric(windows[arm], metric) if metric else None for arm in ARMS
            },
        }

    @admin.post(
        "/{product}/shadow/start", response_model=AdminAnswer, openapi_extra=MAY_LOAD_A_VERSION
    )
    async def start_shadow(product: Product, body: ShadowRequest, router: RouterDep) -> AdminAnswer:
        """Copy the champion's requests to the challenger after answering (bounded queue)."""
        version = await router.control.challenger_version(product, body.version)
        await router.servers.ensure_loaded(product, version, shadow=True)
        answer = await router.control.change_routing(
            product, lambda r: rs.start_shadow(r, version, body.percent), "shadow_started"
        )
        router.servers.prefetch(product, version)  # for the canary that follows a shadow
        return answer

    @admin.post("/{product}/shadow/stop", response_model=AdminAnswer)
    async def stop_shadow(product: Product, router: RouterDep) -> AdminAnswer:
        return await router.control.change_routing(product, rs.stop_shadow, "shadow_stopped")

    @admin.post(
        "/{product}/canary/start", response_model=AdminAnswer, openapi_extra=MAY_LOAD_A_VERSION
    )
    async def start_canary(product: Product, body: CanaryRequest, router: RouterDep) -> AdminAnswer:
        """Send `percent` of entities (sticky, monotone in the percent) to the challenger,
        loading it on the model server first if needed."""
        version = await router.control.challenger_version(product, body.version)
        await router.servers.ensure_loaded(product, version)
        return await router.control.change_routing(
            product, lambda r: rs.start_canary(r, version, body.percent), "canary_started"
        )

    @admin.put("/{product}/canary", response_model=AdminAnswer)
    async def set_canary_percent(
        product: Product, body: CanaryPercentRequest, router: RouterDep
    ) -> AdminAnswer:
        """Move the running canary to another ramp step."""
        return await router.control.change_routing(
            product, lambda r: rs.set_canary_percent(r, body.percent), "canary_percent"
        )

    @admin.get("/{product}/canary/verdict")
    async def canary_window_verdict(
        product: Product,
        router: RouterDep,
        window_seconds: Annotated[float, Query(gt=0, le=7 * 86400)] = 300.0,
    ) -> dict[str, Any]:
        """`canary_verdict` over the last `window_seconds` (from the canary's start at most),
        with the router's configured guardrails: what the rollout controller acts on."""
        routing = router.store[product]
        until = time.time()
        since = until - window_seconds
        if routing.split is not None:
            since = max(since, routing.split.started_at)
        windows = await router.control.arm_windows(product, since, until)

        def judge(reference: tuple[float, ...] | None = None) -> Verdict:
            return canary_verdict(
                windows["champion"],
                windows["challenger"],
                router.config.canary,
                challenger_served=windows["challenger_role"] == "served",
                challenger_reference=reference,
            )

        verdict = judge()
        # The challenger's own training scores matter only when its scores differ from the
        # champion's: read from the registry then, not on every poll.
        differs = any(
            c.name == "score_distribution" and c.status == "breach" for c in verdict.checks
        )
        if differs and routing.challenger is not None:
            reference = await router.control.reference_scores(product, routing.challenger)
            if reference is not None:
                verdict = judge(reference)
        return {
            "product": product,
            "since": since,
            "until": until,
            "champion": windows["champion"].summary(),
            "challenger": windows["challenger"].summary(),
            "challenger_role": windows["challenger_role"],
            "decision": verdict.decision,
            "reasons": list(verdict.reasons),
            "checks": [c.__dict__ for c in verdict.checks],
            "routing": router.control.routing_status(product),
        }

    @admin.post("/{product}/promote", response_model=AdminAnswer, openapi_extra=MAY_LOAD_A_VERSION)
    async def promote(product: Product, body: ReasonRequest, router: RouterDep) -> AdminAnswer:
        """The challenger becomes champion (registry @champion moves, old one kept as
        @previous); all traffic goes to it."""
        name = router.names[product]
        reason = body.reason or "promoted through the router's admin API"

        def move(registry: ModelRegistry, current: ProductRouting) -> None:
            assert current.challenger is not None
            if registry.version_of(name, "challenger") != str(current.challenger):
                registry.move_alias(name, "challenger", str(current.challenger), reason)
            registry.promote(name, reason)

        challenger = router.store[product].challenger
        if challenger is not None:  # (else: promote answers 409)
            await router.servers.ensure_loaded(product, challenger)
        return await router.control.change_routing(
            product, lambda r: rs.promote(r, body.reason), "promoted", move
        )

    @admin.post("/{product}/rollback", response_model=AdminAnswer, openapi_extra=MAY_LOAD_A_VERSION)
    async def rollback(product: Product, body: RollbackRequest, router: RouterDep) -> AdminAnswer:
        """Undo the last step: a challenger taking traffic (canary, split, shadow) is withdrawn;
        with none, the champion returns to the previous one (registry @champion too).
        With `challenger`, only that challenger is withdrawn."""
        name = router.names[product]
        reason = body.reason or "rolled back through the router's admin API"
        try:
            kind = rs.rollback_kind(router.store[product], body.challenger)
        except RoutingConflict as err:
            raise HTTPException(409, str(err)) from err

        def move(registry: ModelRegistry, current: ProductRouting) -> None:
            # Decided again on the state under the admin lock: a canary may have started while
            # the previous version was loading.
            if rs.rollback_kind(current, body.challenger) == "champion_restored":
                registry.rollback(name, reason)
                return
            assert current.challenger is not None
            if registry.version_of(name, "challenger") == str(current.challenger):
                registry.move_alias(name, "challenger", None, reason)
            registry.client.set_model_version_tag(
                name, str(current.challenger), "rolled_back", reason[:500]
            )

        previous = router.store[product].previous
        if kind == "champion_restored" and previous is not None:
            await router.servers.ensure_loaded(product, previous)
        return await router.control.change_routing(
            product, lambda r: rs.rollback(r, body.reason, body.challenger), None, move
        )

    @admin.post("/{product}/refresh", response_model=AdminAnswer)
    async def refresh(product: Product, router: RouterDep) -> AdminAnswer:
        """Re-read the registry's aliases and the model server's loaded versions."""
        if router.registry.uri and not await router.registry.sync():
            raise HTTPException(502, f"registry unavailable: {router.registry.error}")
        await router.discover_models()
        return AdminAnswer(
            product=product, action="refreshed", routing=router.control.routing_status(product)
        )

    app.include_router(admin)
