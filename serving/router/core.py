"""The router's core: a request routed to its arm's model (split, then fallbacks), answered,
logged and offered to the shadow; the state it routes by, and its life cycle."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from fastapi import HTTPException

from mlsd.settings import Settings
from serving.admin import admin_token, router_dir
from serving.fallback import (
    FraudAnswer,
    Hop,
    OnlineFeatureLookup,
    PopularityList,
    RecsAnswer,
    degraded_reason,
    fraud_answer_from_outputs,
    recs_answer_from_outputs,
    request_only_answer,
    rule_answer,
)
from serving.names import Product, served_name, version_label
from serving.prediction_log import (
    Feedback,
    PredictionLogWriter,
    PredictionRecord,
    open_prediction_log,
)
from serving.prediction_log.journal import Journal
from serving.router.control import RoutingControl
from serving.router.discovery import PopularityRefresh, RegistryLink, discover_models
from serving.router.mapping import (
    epoch,
    fraud_columns,
    fraud_decision,
    logged_outcome,
    recs_columns,
    recs_path,
)
from serving.router.servers import ModelServers, arm_error
from serving.router.shadow_copies import ShadowCopies, ShadowJob
from serving.routing_state import ProductRouting, RoutingStore
from serving.runtime import freeze_heap
from serving.schemas import (
    FeedbackAck,
    FeedbackRequest,
    FraudScore,
    RecItem,
    Recommendations,
    RecsRequest,
    Transaction,
)
from serving.shadow import ShadowDispatcher
from serving.traffic import Arm, assign_arm
from serving.upstream import V2Client

log = logging.getLogger("serving.router")
DISCOVERY_EVERY_S = 10.0


class ServedRequest(NamedTuple):
    """What the log and the shadow keep of a request: its entity, body and V2 columns."""

    product: Product
    entity: str
    inputs: dict[str, Any]
    columns: dict[str, list[Any]]
    k: int | None  # slate size asked for (recommendations)


class Router:
    """The router's state and behaviour; the FastAPI app only wires HTTP to it. It holds the
    collaborators each concern lives in: `servers` (model servers, breakers, what they host),
    `registry` (MLflow aliases), `popularity_refresh`, `shadow_copies` and `control` (admin)."""

    def __init__(
        self,
        settings: Settings,
        clients: Mapping[Product, V2Client],
        shadow_clients: Mapping[Product, V2Client] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.router
        self.servers = ModelServers(self.config, clients, shadow_clients)
        self.names = settings.training.model_names()
        self.admin_token = admin_token(settings)
        self.store = RoutingStore(router_dir(settings) / "routing.json")
        self.registry = RegistryLink(settings, self.store)
        self.features = OnlineFeatureLookup(settings, enabled=self.config.fallback_online_features)
        self.popularity = PopularityList(router_dir(settings) / "popularity.json")
        self.popularity_refresh = PopularityRefresh(
            settings, self.store, self.servers, self.popularity
        )
        self.counts: Counter[str] = Counter()
        self.writer: PredictionLogWriter | None = None
        self.shadow_copies = ShadowCopies(self.config, self.servers, self._log)
        self.shadow: ShadowDispatcher[ShadowJob] = self.shadow_copies.dispatcher
        self.control = RoutingControl(
            self.store, self.registry, self.servers, lambda: self.log_writer
        )
        self._background: list[asyncio.Task[None]] = []

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        log_store = await open_prediction_log(self.settings)
        self.writer = PredictionLogWriter(
            log_store,
            batch_size=self.config.log_batch_size,
            flush_interval_s=self.config.log_flush_ms / 1000,
            max_pending=self.config.log_queue_size,
            journal=Journal(router_dir(self.settings) / "prediction-journal")
            if self.config.log_journal
            else None,
        )
        await self.writer.recover()
        self.writer.start()
        self.shadow.start()
        self.features.warm()
        if self.registry.uri:
            await self.registry.sync(timeout_s=30.0)
        await self.discover_models()
        loop = asyncio.get_running_loop()
        if not self.popularity.overall:
            self._background.append(
                loop.create_task(self.popularity_refresh.seed(), name="popularity-seed")
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
        await self.servers.close()
        self.features.close()

    @property
    def log_writer(self) -> PredictionLogWriter:
        assert self.writer is not None, "the router is not started"
        return self.writer

    async def discover_models(self) -> None:
        """Which versions each model server hosts (see discovery.discover_models)."""
        await discover_models(self.servers, self.store, self.registry)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(DISCOVERY_EVERY_S)
            try:
                await self.discover_models()
                if self.registry.uri and self.registry.error is not None:
                    await self.registry.sync()
                if self.popularity_refresh.due():
                    await self.popularity_refresh.refresh()
            except Exception:
                log.exception("router maintenance failed")

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
        usable = arm == "challenger" or backup in self.servers.loaded[product]
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

    async def score_transaction(self, tx: Transaction) -> FraudScore:
        """Route one transaction: split, the arm's model, fallbacks; log it; shadow it."""
        started = time.perf_counter()
        at, request_id = time.time(), uuid.uuid4().hex
        routing = self.store["fraud"]
        arm, experiment = self.arm_for(routing, tx.card_id)
        hops = self.hops_for("fraud", routing, arm)
        columns = fraud_columns(tx)
        result = await self.servers.chain(
            "fraud", hops, columns, request_id, fraud_answer_from_outputs
        )
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
        self._record_answer(
            ServedRequest("fraud", tx.card_id, tx.model_dump(mode="json"), columns, None),
            answer,
            routing,
            arm,
            experiment=experiment,
            request_id=request_id,
            at=at,
            started=started,
            degraded=degraded,
            reason=reason,
            error=arm_error(hops, result),
        )
        return response

    async def _rule_fallback(self, tx: Transaction) -> FraudAnswer:
        request = {
            "card_id": tx.card_id,
            "merchant_id": tx.merchant_id,
            "amount": tx.amount,
            "country": tx.country,
            "device_id": tx.device_id,
            "timestamp": epoch(tx.timestamp),
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
        result = await self.servers.chain(
            "recsys", hops, columns, request_id, recs_answer_from_outputs
        )
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
        path_reason = None
        if answer.path == "popularity":
            hint = f", new {req.genre_hint} releases first" if req.genre_hint else ""
            path_reason = reason or (
                f"cold start: the model does not know listener {req.user_id} "
                f"(the lab's listeners are u_ plus six digits): most played items{hint}"
            )
        items = [RecItem(item_id=i, score=s) for i, s in answer.items[: req.k]]
        response = Recommendations(
            request_id=request_id,
            items=items,
            model_version=answer.model_version,
            path=recs_path(answer),
            path_reason=path_reason,
            arm=arm,
            experiment=experiment,
            degraded=degraded,
            degraded_reason=reason,
        )
        self._record_answer(
            ServedRequest("recsys", req.user_id, req.model_dump(mode="json"), columns, req.k),
            answer,
            routing,
            arm,
            experiment=experiment,
            request_id=request_id,
            at=at,
            started=started,
            degraded=degraded,
            reason=reason,
            error=arm_error(hops, result),
        )
        return response

    def _record_answer(
        self,
        request: ServedRequest,
        answer: FraudAnswer | RecsAnswer,
        routing: ProductRouting,
        arm: Arm,
        *,
        experiment: str | None,
        request_id: str,
        at: float,
        started: float,
        degraded: bool,
        reason: str | None,
        error: str | None,
    ) -> None:
        """Log a served answer, count it, and offer its copy to the shadow (both products)."""
        product, entity, inputs, columns, k = request
        own = routing.arm_version(arm)
        self._log(
            PredictionRecord(
                request_id=request_id,
                role="served",
                at=at,
                product=product,
                entity=entity,
                arm=arm,
                experiment=experiment,
                model_version=version_label(product, own) if own else "",
                answered_by=answer.model_version,
                inputs=inputs,
                **logged_outcome(answer, k),
                latency_ms=(time.perf_counter() - started) * 1000,
                degraded=degraded,
                degraded_reason=reason,
                error=error,
            )
        )
        self.counts[f"{product}.{arm}.{'degraded' if degraded else 'ok'}"] += 1
        self.shadow_copies.maybe_offer(
            product, routing, arm, request_id, at, entity, columns, inputs, degraded
        )

    def _log(self, record: PredictionRecord) -> None:
        self.log_writer.submit(record)

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
