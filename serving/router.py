"""The serving router: the public scoring API in front of the model servers, the admin API that
rollouts drive (split, shadow, canary, promote, rollback), and its entry point."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Receive, Scope, Send

from features.catalog import GENRES
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings, get_settings
from serving import routing_state as rs
from serving.admin import admin_token, router_dir
from serving.fallback import (
    Breakers,
    ChainResult,
    FraudAnswer,
    Hop,
    OnlineFeatureLookup,
    PopularityList,
    RecsAnswer,
    degraded_reason,
    first_answer,
    fraud_answer_from_outputs,
    recs_answer_from_outputs,
    request_only_answer,
    rule_answer,
)
from serving.fast_lane import FastRoute, declared_length, read_body, replaying, serve_fast
from serving.names import PRODUCTS, Product, parse_served_name, served_name, version_label
from serving.prediction_log import (
    Feedback,
    PredictionLogWriter,
    PredictionRecord,
    Role,
    open_prediction_log,
)
from serving.routing_state import ProductRouting, RoutingConflict, RoutingStore
from serving.runtime import freeze_heap
from serving.schemas import (
    AdminAnswer,
    CanaryPercentRequest,
    CanaryRequest,
    ErrorBody,
    FeedbackAck,
    FeedbackRequest,
    FraudDecision,
    FraudScore,
    ReasonRequest,
    RecItem,
    Recommendations,
    RecsPath,
    RecsRequest,
    RollbackRequest,
    ShadowRequest,
    SplitRequest,
    Transaction,
)
from serving.shadow import ShadowDispatcher
from serving.traffic import ARMS, Arm, assign_arm, canary_verdict, experiment_metric, window_stats
from serving.upstream import UpstreamError, V2Client

log = logging.getLogger("serving.router")
POPULARITY_PROBE_USER = "__mlsd_popularity_probe__"  # unknown to every model: the cold-start path
DISCOVERY_EVERY_S = 10.0
PROBE_TIMEOUT_S = 2.0


def _served_or_none(name: str) -> tuple[str | None, str]:
    """(product, version) of a served name; (None, "") for a name that is not one."""
    try:
        return parse_served_name(name)
    except ValueError:
        return None, ""


def registry_uri(settings: Settings) -> str | None:
    """The MLflow URI alias moves go to (None: the router keeps routing state alone)."""
    uri = settings.router.registry_uri
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or None


def _epoch(value: Any) -> float:
    return float(value.timestamp())


@dataclass(frozen=True)
class ShadowJob:
    """A copy of an answered request for the challenger."""

    product: Product
    request_id: str
    at: float
    entity: str
    version: int
    columns: dict[str, list[Any]]
    inputs: dict[str, Any]


class Router:
    """The router's state and behaviour; the FastAPI app only wires HTTP to it."""

    def __init__(
        self,
        settings: Settings,
        clients: Mapping[Product, V2Client],
        shadow_clients: Mapping[Product, V2Client] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.router
        self.clients = dict(clients)
        # The products with a shadow server of their own (see ModelServerSettings: a full
        # shadow then adds no work to the process that answers); the others' copies go to
        # their own server.
        self.shadow_servers = dict(shadow_clients or {})
        self.names = settings.training.model_names()
        self.admin_token = admin_token(settings)
        self.store = RoutingStore(router_dir(settings) / "routing.json")
        self.breakers = Breakers(
            self.config.breaker_window,
            self.config.breaker_min_calls,
            self.config.breaker_failure_rate,
            self.config.breaker_cooldown_seconds,
            self.config.breaker_min_failing_seconds,
        )
        self.loaded: dict[Product, set[int]] = {p: set() for p in PRODUCTS}
        # What a separate shadow server hosts, and its own breakers (same policy): its
        # failures say nothing of the serving server's. Unused when shadows share the server.
        self.shadow_loaded: dict[Product, set[int]] = {p: set() for p in PRODUCTS}
        self.shadow_breakers = dataclasses.replace(self.breakers, by_model={})
        self.features = OnlineFeatureLookup(settings, enabled=self.config.fallback_online_features)
        self.popularity = PopularityList(router_dir(settings) / "popularity.json")
        self.registry_uri = registry_uri(settings)
        self._registry: ModelRegistry | None = None
        self.registry_error: str | None = None
        self.counts: Counter[str] = Counter()
        self.writer: PredictionLogWriter | None = None
        self.shadow: ShadowDispatcher[ShadowJob] = ShadowDispatcher(
            self._run_shadow,
            self.config.shadow_queue_size,
            self.config.shadow_workers,
            max_batch=self.config.shadow_batch_max,
            linger_s=self.config.shadow_linger_ms / 1000,
        )
        self._background: list[asyncio.Task[None]] = []
        self._admin_lock = asyncio.Lock()
        self._popularity_at = 0.0
        self._popularity_lock = asyncio.Lock()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        log_store = await open_prediction_log(self.settings)
        self.writer = PredictionLogWriter(
            log_store,
            batch_size=self.config.log_batch_size,
            flush_interval_s=self.config.log_flush_ms / 1000,
            max_pending=self.config.log_queue_size,
        )
        self.writer.start()
        self.shadow.start()
        self.features.warm()
        if self.registry_uri:
            await self.sync_registry(timeout_s=30.0)
        await self.discover_models()
        loop = asyncio.get_running_loop()
        if not self.popularity.overall:
            self._background.append(
                loop.create_task(self._seed_popularity(), name="popularity-seed")
            )
        self._background.append(loop.create_task(self._maintain(), name="router-maintenance"))
        if self.features.status == "warming":
            self._background.append(loop.create_task(self._freeze_when_warm(), name="heap-freeze"))
        freeze_heap()

    async def _freeze_when_warm(self) -> None:
        """Freeze the heap again once the fallback's Feast store is open (it warms on a thread
        after start): its registry and store are long-lived too (see serving.runtime)."""
        while self.features.status == "warming":
            await asyncio.sleep(0.5)
        freeze_heap()

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # Shadows first (their rows go to the log), then the log: everything acknowledged lands.
        await self.shadow.close()
        if self.writer is not None:
            await self.writer.close()
        for client in [*self.clients.values(), *self.shadow_servers.values()]:
            await client.close()
        self.features.close()

    @property
    def log_writer(self) -> PredictionLogWriter:
        assert self.writer is not None, "the router is not started"
        return self.writer

    # --- registry and model discovery -----------------------------------------------------------

    def _registry_client(self) -> ModelRegistry:
        if self._registry is None:
            assert self.registry_uri is not None
            self._registry = ModelRegistry(self.registry_uri)
        return self._registry

    def _registry_aliases(self) -> dict[Product, dict[str, int | None]]:
        registry = self._registry_client()
        out: dict[Product, dict[str, int | None]] = {}
        for product in PRODUCTS:
            aliases = registry.aliases(self.names[product])
            out[product] = {
                a: int(aliases[a]) if a in aliases else None
                for a in ("champion", "challenger", "previous")
            }
        return out

    async def sync_registry(self, timeout_s: float = 30.0) -> bool:
        """Adopt the registry's aliases (the truth for which version is champion)."""
        try:
            async with asyncio.timeout(timeout_s):
                aliases = await asyncio.to_thread(self._registry_aliases)
        except Exception as err:
            self.registry_error = f"{type(err).__name__}: {err}"[:300]
            log.warning("registry %s unavailable: %s", self.registry_uri, self.registry_error)
            return False
        self.registry_error = None
        for product in PRODUCTS:
            current = self.store[product]
            synced = rs.sync_with_registry(current, aliases[product])
            if synced is not current:
                self.store.put(synced)
        return True

    async def discover_models(self) -> None:
        """Which versions each model server has loaded; with no registry and no saved state, the
        newest loaded version becomes champion (a lab started by hand still routes)."""
        for product in PRODUCTS:
            if product in self.shadow_servers:
                # A restarted shadow server has lost what the router loaded onto it.
                hosted = await self._hosted(self.shadow_servers[product], product)
                if hosted is not None:
                    self.shadow_loaded[product] = hosted
            versions = await self._hosted(self.clients[product], product)
            if versions is None:
                continue
            self.loaded[product] = versions
            routing = self.store[product]
            if routing.champion is None and versions and not self.registry_uri:
                self.store.put(rs.adopt_discovered_champion(routing, max(versions)))

    @staticmethod
    async def _hosted(client: V2Client, product: Product) -> set[int] | None:
        """The versions of `product` a model server hosts (None: it did not answer)."""
        try:
            names = await client.list_models(PROBE_TIMEOUT_S)
        except UpstreamError:
            return None
        return {int(v) for p, v in map(_served_or_none, names) if p == product}

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(DISCOVERY_EVERY_S)
            try:
                await self.discover_models()
                if self.registry_uri and self.registry_error is not None:
                    await self.sync_registry()
                if time.monotonic() - self._popularity_at >= self.config.popularity_refresh_seconds:
                    await self.refresh_popularity()
            except Exception:
                log.exception("router maintenance failed")

    async def _seed_popularity(self) -> None:
        if await self.refresh_popularity():
            return
        seeded = await asyncio.to_thread(self.popularity.seed_from_feature_table, self.settings)
        if seeded:
            await asyncio.to_thread(self.popularity.save)

    async def refresh_popularity(self) -> bool:
        """Ask the recsys champion for an unknown user's list (its popularity path), overall and
        per genre; keep it for the popularity fallback."""
        async with self._popularity_lock:  # the start-up seed and the maintenance loop
            return await self._refresh_popularity()

    async def _refresh_popularity(self) -> bool:
        self._popularity_at = time.monotonic()
        champion = self.store["recsys"].champion
        if champion is None:
            return False
        model = served_name("recsys", champion)
        label = version_label("recsys", champion)
        client = self.clients["recsys"]

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

    # --- routing ------------------------------------------------------------------------------

    def arm_for(self, routing: ProductRouting, entity: str) -> tuple[Arm, str | None]:
        split = routing.split
        if split is None or routing.challenger is None:
            return "champion", None
        return assign_arm(entity, split.name, split.challenger_percent), split.name

    def hops_for(self, product: Product, routing: ProductRouting, arm: Arm) -> list[Hop]:
        """The arm's version, then a fallback version: the champion for a challenger request,
        the previous champion (when loaded) for a champion request."""
        hops: list[Hop] = []
        own = routing.arm_version(arm)
        if own is not None:
            hops.append(
                Hop(served_name(product, own), version_label(product, own), self.budget_s(product))
            )
        backup = routing.champion if arm == "challenger" else routing.previous
        usable = arm == "challenger" or backup in self.loaded[product]
        if backup is not None and backup != own and usable:
            hops.append(
                Hop(
                    served_name(product, backup),
                    version_label(product, backup),
                    self.budget_s(product, fallback=True),
                )
            )
        return hops

    def budget_s(self, product: Product, fallback: bool = False) -> float:
        """A model hop's time budget: the router's setting, else the model server's hint."""
        ms = self.config.fallback_model_timeout_ms if fallback else None
        ms = ms or self.config.model_timeout_ms
        ms = ms or self.settings.model_servers.product(product).timeout_ms
        return ms / 1000

    async def _chain(
        self,
        product: Product,
        hops: Sequence[Hop],
        columns: dict[str, list[Any]],
        request_id: str,
        decode: Callable[[Mapping[str, list[Any]], str], Any],
        shadow: bool = False,
    ) -> ChainResult[Any]:
        client, loaded, breakers = self._server(product, shadow)

        async def call(hop: Hop) -> Any:
            outputs = await client.infer(hop.model, columns, hop.timeout_s, request_id)
            return decode(outputs, hop.version)

        result = await first_answer(hops, call, breakers)
        if result.hop is not None:
            loaded.add(int(parse_served_name(result.hop.model)[1]))
        return result

    def _server(self, product: Product, shadow: bool) -> tuple[V2Client, set[int], Breakers]:
        """The model server that answers (or, `shadow`, that takes the copies), what it has
        loaded, and its circuit breakers."""
        if shadow and product in self.shadow_servers:
            return self.shadow_servers[product], self.shadow_loaded[product], self.shadow_breakers
        return self.clients[product], self.loaded[product], self.breakers

    def _arm_error(self, hops: Sequence[Hop], result: ChainResult[Any]) -> str | None:
        """Why the arm's own model did not answer (None when it did)."""
        if not hops:
            return "no model version is routed for this arm"
        first = hops[0].model
        failure = next((f for f in result.failures if f.model == first), None)
        return None if failure is None else f"{failure.kind}: {failure.detail}"[:500]

    async def score_transaction(self, tx: Transaction) -> FraudScore:
        """Route one transaction: split, the arm's model, fallbacks; log it; shadow it."""
        started = time.perf_counter()
        at, request_id = time.time(), uuid.uuid4().hex
        routing = self.store["fraud"]
        arm, experiment = self.arm_for(routing, tx.card_id)
        hops = self.hops_for("fraud", routing, arm)
        columns = fraud_columns(tx)
        result = await self._chain("fraud", hops, columns, request_id, fraud_answer_from_outputs)
        answer: FraudAnswer
        if result.answer is not None:
            answer = result.answer
        else:
            answer = await self._rule_fallback(tx)
        reason = degraded_reason(result.failures, answer.model_version)
        if result.answer is None and reason is None:
            reason = f"no model routed; answered by {answer.model_version}"
        degraded = reason is not None
        response = FraudScore(
            request_id=request_id,
            score=answer.score,
            decision=fraud_decision(answer),
            reasons=list(answer.reasons),
            model_version=answer.model_version,
            arm=arm,
            experiment=experiment,
            degraded=degraded,
            degraded_reason=reason,
            cold_start=answer.card_unknown,
        )
        inputs = tx.model_dump(mode="json")
        own = routing.arm_version(arm)
        self._log(
            PredictionRecord(
                request_id=request_id,
                role="served",
                at=at,
                product="fraud",
                entity=tx.card_id,
                arm=arm,
                experiment=experiment,
                model_version=version_label("fraud", own) if own else "",
                answered_by=answer.model_version,
                inputs=inputs,
                **logged_outcome(answer),
                latency_ms=(time.perf_counter() - started) * 1000,
                degraded=degraded,
                degraded_reason=reason,
                error=self._arm_error(hops, result),
            )
        )
        self.counts[f"fraud.{arm}.{'degraded' if degraded else 'ok'}"] += 1
        self._maybe_shadow(
            "fraud", routing, arm, request_id, at, tx.card_id, columns, inputs, degraded
        )
        return response

    async def _rule_fallback(self, tx: Transaction) -> FraudAnswer:
        request = {
            "card_id": tx.card_id,
            "merchant_id": tx.merchant_id,
            "amount": tx.amount,
            "country": tx.country,
            "device_id": tx.device_id,
            "timestamp": _epoch(tx.timestamp),
        }
        features = await self.features.fraud_features(
            request, self.config.features_timeout_ms / 1000
        )
        if features is not None:
            return rule_answer(features, self.config.rule_block_threshold)
        return request_only_answer(
            tx.amount, self.config.request_only_amount_usd, self.config.rule_block_threshold
        )

    async def recommend(self, req: RecsRequest) -> Recommendations:
        started = time.perf_counter()
        at, request_id = time.time(), uuid.uuid4().hex
        routing = self.store["recsys"]
        arm, experiment = self.arm_for(routing, req.user_id)
        hops = self.hops_for("recsys", routing, arm)
        columns = recs_columns(req, at)
        result = await self._chain("recsys", hops, columns, request_id, recs_answer_from_outputs)
        answer: RecsAnswer = (
            result.answer
            if result.answer is not None
            else self.popularity.recommend(req.k, req.genre_hint)
        )
        reason = degraded_reason(result.failures, answer.model_version)
        if result.answer is None:
            reason = reason or f"no model routed; answered by {answer.model_version}"
            if not answer.items:
                reason += " (no popularity list yet: empty)"
        degraded = reason is not None
        items = [RecItem(item_id=i, score=s) for i, s in answer.items[: req.k]]
        response = Recommendations(
            request_id=request_id,
            items=items,
            model_version=answer.model_version,
            path=recs_path(answer),
            arm=arm,
            experiment=experiment,
            degraded=degraded,
            degraded_reason=reason,
        )
        inputs = req.model_dump(mode="json")
        own = routing.arm_version(arm)
        self._log(
            PredictionRecord(
                request_id=request_id,
                role="served",
                at=at,
                product="recsys",
                entity=req.user_id,
                arm=arm,
                experiment=experiment,
                model_version=version_label("recsys", own) if own else "",
                answered_by=answer.model_version,
                inputs=inputs,
                **logged_outcome(answer, req.k),
                latency_ms=(time.perf_counter() - started) * 1000,
                degraded=degraded,
                degraded_reason=reason,
                error=self._arm_error(hops, result),
            )
        )
        self.counts[f"recsys.{arm}.{'degraded' if degraded else 'ok'}"] += 1
        self._maybe_shadow(
            "recsys", routing, arm, request_id, at, req.user_id, columns, inputs, degraded
        )
        return response

    def _log(self, record: PredictionRecord) -> None:
        self.log_writer.submit(record)

    # --- shadow -------------------------------------------------------------------------------

    def _maybe_shadow(
        self,
        product: Product,
        routing: ProductRouting,
        arm: Arm,
        request_id: str,
        at: float,
        entity: str,
        columns: dict[str, list[Any]],
        inputs: dict[str, Any],
        degraded: bool,
    ) -> None:
        # The answer is decided and logged: the copy only enqueues (or is dropped and counted).
        if not (routing.shadow and arm == "champion" and routing.challenger is not None):
            return
        if degraded:
            # The champion's server is struggling: a copy would add to its load (the challenger
            # often shares the process), and beside a fallback's answer it compares nothing.
            self.shadow.stats.skipped += 1
            return
        salt = f"shadow-{product}-v{routing.challenger}"
        if assign_arm(entity, salt, routing.shadow_percent) != "challenger":
            return  # not in the shadow's sample
        self.shadow.offer(
            ShadowJob(product, request_id, at, entity, routing.challenger, columns, inputs)
        )

    async def _run_shadow(self, jobs: list[ShadowJob]) -> None:
        """Send a batch of copies: one model call per product, version and set of inputs (a
        recommendation's genre hint is optional), and a log row per copy."""
        groups: dict[tuple[Product, int, tuple[str, ...]], list[ShadowJob]] = {}
        for job in jobs:
            groups.setdefault((job.product, job.version, tuple(job.columns)), []).append(job)
        for (product, version, names), group in groups.items():
            await self._shadow_call(product, version, names, group)

    async def _shadow_call(
        self, product: Product, version: int, names: tuple[str, ...], jobs: list[ShadowJob]
    ) -> None:
        hop = Hop(
            served_name(product, version),
            version_label(product, version),
            self.config.shadow_timeout_ms / 1000,
        )
        columns = {name: [v for job in jobs for v in job.columns[name]] for name in names}

        def one_row_per_copy(outputs: Mapping[str, list[Any]], _: str) -> Mapping[str, list[Any]]:
            for name, data in outputs.items():
                if len(data) != len(jobs):
                    raise ValueError(f"output {name}: {len(data)} rows for {len(jobs)} inputs")
            return outputs

        started = time.perf_counter()
        # The V2 request's id is the first copy's request id (each row keeps its own in the log).
        result = await self._chain(
            product, [hop], columns, jobs[0].request_id, one_row_per_copy, shadow=True
        )
        # Each copy's latency is its batch call's: how fast the challenger answers a batch on
        # the shadow server, not what a caller would see (the canary measures that).
        latency_ms = (time.perf_counter() - started) * 1000
        decode = fraud_answer_from_outputs if product == "fraud" else recs_answer_from_outputs
        call_error = self._arm_error([hop], result)
        for row, job in enumerate(jobs):
            answer: FraudAnswer | RecsAnswer | None = None
            error = call_error
            if result.answer is not None:
                try:
                    answer = decode(result.answer, hop.version, row)
                except (KeyError, IndexError, TypeError, ValueError) as err:
                    error = f"bad_response: {type(err).__name__}: {err}"[:500]
            k = int(job.columns["k"][0]) if product == "recsys" else None
            self._log(
                PredictionRecord(
                    request_id=job.request_id,
                    role="shadow",
                    at=job.at,
                    product=product,
                    entity=job.entity,
                    arm="challenger",
                    experiment=f"shadow-{product}-v{version}",
                    model_version=hop.version,
                    answered_by="none" if answer is None else answer.model_version,
                    inputs=job.inputs,
                    **logged_outcome(answer, k),
                    latency_ms=latency_ms,
                    degraded=answer is None,
                    degraded_reason=None if error is None else f"shadow call failed: {error}"[:500],
                    error=error,
                )
            )

    # --- feedback -----------------------------------------------------------------------------

    async def record_feedback(self, body: FeedbackRequest) -> FeedbackAck:
        feedback = Feedback(
            request_id=body.request_id,
            product=body.product,
            at=time.time(),
            label=body.label,
            item_id=body.item_id,
            event=(body.event or "play") if body.item_id is not None else None,
        )
        try:
            result = await self.log_writer.join_label(feedback)
        except Exception as err:  # the log's own failure: say so, and that a retry may work
            log.warning("feedback for %s not joined: %r", body.request_id, err)
            raise HTTPException(503, f"prediction log unavailable: {type(err).__name__}") from err
        if result == "unknown_request":
            raise HTTPException(404, f"request_id {body.request_id}: no prediction logged")
        if result == "wrong_product":
            other = "recsys" if body.product == "fraud" else "fraud"
            field = "label" if body.product == "fraud" else "item_id"
            raise HTTPException(
                422,
                f"{field}: request_id {body.request_id} is a {other} prediction "
                f"({'send item_id' if other == 'recsys' else 'send label'})",
            )
        return FeedbackAck(request_id=body.request_id, product=body.product, joined=True)

    # --- admin --------------------------------------------------------------------------------

    async def ensure_loaded(self, product: Product, version: int, shadow: bool = False) -> None:
        """Make sure the model server (`shadow`: the one taking shadow copies) hosts `version`
        (a V2 repository load if it does not)."""
        client, loaded, _ = self._server(product, shadow)
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

    async def challenger_version(self, product: Product, requested: int | None) -> int:
        if requested is not None:
            return requested
        if self.registry_uri:
            name = self.names[product]
            version = await asyncio.to_thread(
                self._registry_client().version_of, name, "challenger"
            )
            if version is not None:
                return int(version)
        current = self.store[product].challenger
        if current is not None:
            return current
        raise HTTPException(
            409, f"{product} has no challenger (none in the registry): pass a version"
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
        async with self._admin_lock:
            current = self.store[product]
            try:
                updated = transition(current)
            except RoutingConflict as err:
                raise HTTPException(409, str(err)) from err
            if registry_move is not None and self.registry_uri:
                try:
                    await asyncio.to_thread(registry_move, self._registry_client(), current)
                except Exception as err:
                    raise HTTPException(
                        502, f"registry {self.registry_uri}: {type(err).__name__}: {err}"
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
        name = self.names[product]
        out = routing.model_dump(mode="json", exclude={"history"})
        out["registered_name"] = name
        out["loaded"] = sorted(self.loaded[product])
        shadow_server = self.shadow_servers.get(product)
        out["shadow_server"] = (
            "the model server" if shadow_server is None else shadow_server.base_url
        )
        out["models"] = {
            arm: served_name(product, v)
            for arm in ARMS
            if (v := routing.arm_version(arm)) is not None
        }
        out["breakers"] = {
            m: s for m, s in self.breakers.states().items() if m.startswith(f"{product}-v")
        }
        out["history"] = [e.model_dump(mode="json") for e in routing.history[-10:]]
        return out

    async def arm_windows(self, product: Product, since: float, until: float) -> dict[str, Any]:
        """Both arms' window stats (served rows; shadow rows when a shadow runs)."""
        routing = self.store[product]
        log_store = self.log_writer.log
        await self.log_writer.flush()
        champion_rows = await log_store.window(product, "champion", since, until, role="served")
        challenger_role: Role = "shadow" if routing.shadow and routing.split is None else "served"
        challenger_rows = await log_store.window(
            product, "challenger", since, until, role=challenger_role
        )
        return {
            "champion": window_stats(champion_rows),
            "challenger": window_stats(challenger_rows),
            "challenger_role": challenger_role,
        }


def fraud_columns(tx: Transaction) -> dict[str, list[Any]]:
    """A transaction as fraud-vN's V2 inputs (docs/inference-contract.md)."""
    return {
        "card_id": [tx.card_id],
        "merchant_id": [tx.merchant_id],
        "amount": [float(tx.amount)],
        "country": [tx.country],
        "device_id": [tx.device_id],
        "event_timestamp": [_epoch(tx.timestamp)],
    }


def recs_columns(req: RecsRequest, now: float) -> dict[str, list[Any]]:
    """A recommendation request as recsys-vN's V2 inputs."""
    columns: dict[str, list[Any]] = {
        "user_id": [req.user_id],
        "k": [int(req.k)],
        "event_timestamp": [_epoch(req.timestamp) if req.timestamp is not None else now],
    }
    if req.genre_hint is not None:
        columns["genre_hint"] = [req.genre_hint]
    return columns


def fraud_decision(answer: FraudAnswer) -> FraudDecision:
    return "block" if answer.decision == "block" else "allow"


def recs_path(answer: RecsAnswer) -> RecsPath:
    return "popularity" if answer.path == "popularity" else "model"


def logged_outcome(answer: FraudAnswer | RecsAnswer | None, k: int | None = None) -> dict[str, Any]:
    """What the prediction log keeps of an answer (served or shadow): output, score, decision
    and the features the model used; `k`: how many recommendations were asked for."""
    if isinstance(answer, FraudAnswer):
        decision = fraud_decision(answer)
        return {
            "output": {
                "score": answer.score,
                "decision": decision,
                "reasons": list(answer.reasons),
            },
            "score": answer.score,
            "decision": decision,
            "features": answer.features,
        }
    if isinstance(answer, RecsAnswer):
        shown = answer.items if k is None else answer.items[:k]
        return {
            "output": {
                "items": [{"item_id": i, "score": s} for i, s in shown],
                "path": recs_path(answer),
            },
            "score": shown[0][1] if shown else None,
            "decision": "recommend",
            "features": None,
        }
    return {"output": {}, "score": None, "decision": None, "features": None}


# --- HTTP ------------------------------------------------------------------------------------


class BodySizeLimit:
    """Answers 413 to a request body over `max_bytes`, before anything parses it (a declared
    Content-Length is refused at once; a chunked body is counted as it arrives)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        received = await read_body(receive, self.max_bytes)
        if received.disconnected:
            return
        if not received.within(self.max_bytes):
            await self._too_large(send)
            return
        await self.app(scope, replaying(received, receive), send)

    async def _too_large(self, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


def _json_safe(value: Any) -> Any:
    """NaN and infinities as strings: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (each error's loc names the field), but safe for a rejected NaN: the
    default handler echoes the input back and fails to encode it, which would be a 500."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))}
    )


_bearer = HTTPBearer(auto_error=False, description="The router's admin token (see `mlsd`).")
_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Body larger than router.max_body_bytes."},
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong admin token."},
    409: {"model": ErrorBody, "description": "The call does not fit the current routing."},
    502: {"model": ErrorBody, "description": "The model server or the registry refused."},
}


# Dependencies are async on purpose: FastAPI runs a plain `def` dependency on its thread pool,
# two thread hops per request for nothing.
async def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = (await get_router(request)).admin_token.encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    # compare_digest: the time taken does not reveal how much of a guess was right.
    if credentials is None or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"}
        )


RouterDep = Annotated[Router, Depends(get_router)]


class RouterApp(FastAPI):
    """The router's app: FastAPI, with the two scoring routes also on the fast lane (see
    serving.fast_lane). Their FastAPI routes stay: they document the API and answer whatever
    the fast lane hands on (every 4xx)."""

    fast_routes: Mapping[str, FastRoute] = {}
    max_body_bytes: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_fast(
            self.fast_routes, self.max_body_bytes, scope, receive, send, super().__call__
        )


def create_app(
    settings: Settings | None = None,
    clients: Mapping[Product, V2Client] | None = None,
    shadow_clients: Mapping[Product, V2Client] | None = None,
) -> RouterApp:
    """The router app. `clients` (and `shadow_clients`) replace the model-server clients
    (tests give fakes)."""
    settings = settings or get_settings()
    upstreams = clients or {p: V2Client(settings.upstream_url(p)) for p in PRODUCTS}
    if shadow_clients is None and clients is None:
        shadow_clients = {
            p: V2Client(url) for p in PRODUCTS if (url := settings.shadow_server_url(p))
        }
    router = Router(settings, upstreams, shadow_clients)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    app = RouterApp(
        title="mlsd-lab router",
        version="1",
        description="Fraud scoring and recommendations in front of the KServe model servers, "
        "with sticky A/B splits, shadow traffic, canaries and safe degradation.",
        lifespan=lifespan,
    )
    app.state.router = router
    app.max_body_bytes = settings.router.max_body_bytes
    app.fast_routes = {
        "/v1/fraud/score": FastRoute(Transaction, router.score_transaction),
        "/v1/recs": FastRoute(RecsRequest, router.recommend),
    }
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.router.max_body_bytes)
    add_public_routes(app)
    add_admin_routes(app)
    return app


def add_public_routes(app: FastAPI) -> None:
    # The two hot routes take the app's Router from the request and return their encoded
    # answer themselves: no dependency to solve, no second validation of the response model
    # (the answer is built as that model). The schema still documents both.
    @app.post("/v1/fraud/score", response_model=FraudScore, responses=_ERRORS, tags=["public"])
    async def score_fraud(tx: Transaction, request: Request) -> Response:
        """Score a card transaction. A failing model degrades (previous version, then rules)."""
        router: Router = request.app.state.router
        return _answer(await router.score_transaction(tx))

    @app.post("/v1/recs", response_model=Recommendations, responses=_ERRORS, tags=["public"])
    async def recommend(req: RecsRequest, request: Request) -> Response:
        """Top-k items for a listener; unknown listeners get the model's cold-start path."""
        router: Router = request.app.state.router
        return _answer(await router.recommend(req))

    @app.post(
        "/v1/feedback",
        response_model=FeedbackAck,
        responses={**_ERRORS, 404: {"model": ErrorBody, "description": "Unknown request_id."}},
        tags=["public"],
    )
    async def feedback(body: FeedbackRequest, router: RouterDep) -> FeedbackAck:
        """Join a label (fraud) or an engaged item (recs) to a prediction by request id."""
        return await router.record_feedback(body)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(router: RouterDep) -> dict[str, Any]:
        """Ready once started; says which products have a champion to route to."""
        return {
            "status": "ok",
            "champions": {p: router.store[p].champion for p in PRODUCTS},
        }


def _answer(answer: FraudScore | Recommendations) -> Response:
    return Response(
        content=answer.model_dump_json(),
        media_type="application/json",
        headers={"X-Request-ID": answer.request_id},
    )


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
            "products": {p: router.routing_status(p) for p in PRODUCTS},
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
            "registry": {"uri": router.registry_uri, "error": router.registry_error},
        }

    @admin.get("/{product}/status")
    async def product_status(product: Product, router: RouterDep) -> dict[str, Any]:
        return router.routing_status(product)

    @admin.put("/{product}/split", response_model=AdminAnswer)
    async def set_split(product: Product, body: SplitRequest, router: RouterDep) -> AdminAnswer:
        """Start (or replace) an A/B experiment: `challenger_percent` of entities, by a sticky
        hash salted with the experiment name, see the challenger. Every prediction logs its
        arm and the experiment."""
        version = await router.challenger_version(product, body.version)
        await router.ensure_loaded(product, version)
        return await router.change_routing(
            product,
            lambda r: rs.start_experiment(
                r, body.experiment, body.metric, body.challenger_percent, version
            ),
            "experiment_started",
        )

    @admin.delete("/{product}/split", response_model=AdminAnswer)
    async def stop_split(product: Product, router: RouterDep) -> AdminAnswer:
        return await router.change_routing(product, rs.stop_split, "split_stopped")

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
        windows = await router.arm_windows(product, since, until)
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

    @admin.post("/{product}/shadow/start", response_model=AdminAnswer)
    async def start_shadow(product: Product, body: ShadowRequest, router: RouterDep) -> AdminAnswer:
        """Copy the champion's requests to the challenger after answering (bounded queue)."""
        version = await router.challenger_version(product, body.version)
        await router.ensure_loaded(product, version, shadow=True)
        return await router.change_routing(
            product, lambda r: rs.start_shadow(r, version, body.percent), "shadow_started"
        )

    @admin.post("/{product}/shadow/stop", response_model=AdminAnswer)
    async def stop_shadow(product: Product, router: RouterDep) -> AdminAnswer:
        return await router.change_routing(product, rs.stop_shadow, "shadow_stopped")

    @admin.post("/{product}/canary/start", response_model=AdminAnswer)
    async def start_canary(product: Product, body: CanaryRequest, router: RouterDep) -> AdminAnswer:
        """Send `percent` of entities (sticky, monotone in the percent) to the challenger,
        loading it on the model server first if needed."""
        version = await router.challenger_version(product, body.version)
        await router.ensure_loaded(product, version)
        return await router.change_routing(
            product, lambda r: rs.start_canary(r, version, body.percent), "canary_started"
        )

    @admin.put("/{product}/canary", response_model=AdminAnswer)
    async def set_canary_percent(
        product: Product, body: CanaryPercentRequest, router: RouterDep
    ) -> AdminAnswer:
        """Move the running canary to another ramp step."""
        return await router.change_routing(
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
        windows = await router.arm_windows(product, since, until)
        verdict = canary_verdict(
            windows["champion"],
            windows["challenger"],
            router.config.canary,
            challenger_served=windows["challenger_role"] == "served",
        )
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
            "routing": router.routing_status(product),
        }

    @admin.post("/{product}/promote", response_model=AdminAnswer)
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
            await router.ensure_loaded(product, challenger)
        return await router.change_routing(
            product, lambda r: rs.promote(r, body.reason), "promoted", move
        )

    @admin.post("/{product}/rollback", response_model=AdminAnswer)
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
            await router.ensure_loaded(product, previous)
        return await router.change_routing(
            product, lambda r: rs.rollback(r, body.reason, body.challenger), None, move
        )

    @admin.post("/{product}/refresh", response_model=AdminAnswer)
    async def refresh(product: Product, router: RouterDep) -> AdminAnswer:
        """Re-read the registry's aliases and the model server's loaded versions."""
        if router.registry_uri and not await router.sync_registry():
            raise HTTPException(502, f"registry unavailable: {router.registry_error}")
        await router.discover_models()
        return AdminAnswer(
            product=product, action="refreshed", routing=router.routing_status(product)
        )

    app.include_router(admin)


# --- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.router`: serve on bind_host:router.port (settings, or the flags)."""
    from mlsd.telemetry import silence_telemetry

    silence_telemetry()
    # Registry calls run on threads with the router's own budget; MLflow's defaults (7 retries,
    # 120 s each) would keep a thread busy for minutes after the router gave up on it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    parser = argparse.ArgumentParser(prog="python -m serving.router", description=__doc__)
    parser.add_argument("--host", help="Bind address (default: settings bind_host).")
    parser.add_argument("--port", type=int, help="Port (default: settings router.port).")
    parser.add_argument(
        "--print-admin-token",
        action="store_true",
        help="Print the admin token (creating it if needed) and exit.",
    )
    parser.add_argument("--access-log", action="store_true", help="Log every request.")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.print_admin_token:
        print(admin_token(settings))
        return 0
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.bind_host,
        port=args.port or settings.router.port,
        access_log=args.access_log,
        log_level="info",
        # SIGTERM: stop accepting, finish requests in flight, then the lifespan's shutdown
        # writes every queued log row. Bounded, so a stuck client cannot hold the stop forever.
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
