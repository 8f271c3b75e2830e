"""Shadow traffic: after the champion's answer is decided and logged, a sampled copy of the
request goes (batched, off the request's path) to the challenger, and each copy's answer becomes
a `shadow` row of the prediction log under the served row's request id."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlsd.settings import RouterSettings
from serving.fallback import (
    FraudAnswer,
    Hop,
    RecsAnswer,
    fraud_answer_from_outputs,
    recs_answer_from_outputs,
)
from serving.names import Product, served_name, version_label
from serving.prediction_log import PredictionRecord
from serving.router.mapping import logged_outcome
from serving.router.servers import ModelServers, arm_error
from serving.routing_state import ProductRouting
from serving.shadow import ShadowDispatcher
from serving.traffic import Arm, assign_arm


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


class ShadowCopies:
    """Samples answered requests into the shadow queue and sends its batches; `dispatcher`
    holds the queue, its workers and their counters."""

    def __init__(
        self,
        config: RouterSettings,
        servers: ModelServers,
        log: Callable[[PredictionRecord], None],
    ) -> None:
        self.config = config
        self.servers = servers
        self.log = log
        self.dispatcher: ShadowDispatcher[ShadowJob] = ShadowDispatcher(
            self.run,
            config.shadow_queue_size,
            config.shadow_workers,
            max_batch=config.shadow_batch_max,
            linger_s=config.shadow_linger_ms / 1000,
        )

    def maybe_offer(
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
            self.dispatcher.stats.skipped += 1
            return
        salt = f"shadow-{product}-v{routing.challenger}"
        if assign_arm(entity, salt, routing.shadow_percent) != "challenger":
            return  # not in the shadow's sample
        self.dispatcher.offer(
            ShadowJob(product, request_id, at, entity, routing.challenger, columns, inputs)
        )

    async def run(self, jobs: list[ShadowJob]) -> None:
        """Send a batch of copies: one model call per product, version and set of inputs (a
        recommendation's genre hint is optional), and a log row per copy."""
        groups: dict[tuple[Product, int, tuple[str, ...]], list[ShadowJob]] = {}
        for job in jobs:
            groups.setdefault((job.product, job.version, tuple(job.columns)), []).append(job)
        for (product, version, names), group in groups.items():
            await self._call(product, version, names, group)

    async def _call(
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
        result = await self.servers.chain(
            product, [hop], columns, jobs[0].request_id, one_row_per_copy, shadow=True
        )
        # Each copy's latency is its batch call's: how fast the challenger answers a batch on
        # the shadow server, not what a caller would see (the canary measures that).
        latency_ms = (time.perf_counter() - started) * 1000
        decode = fraud_answer_from_outputs if product == "fraud" else recs_answer_from_outputs
        call_error = arm_error([hop], result)
        for row, job in enumerate(jobs):
            answer: FraudAnswer | RecsAnswer | None = None
            error = call_error
            if result.answer is not None:
                try:
                    answer = decode(result.answer, hop.version, row)
                except (KeyError, IndexError, TypeError, ValueError) as err:
                    error = f"bad_response: {type(err).__name__}: {err}"[:500]
            k = int(job.columns["k"][0]) if product == "recsys" else None
            self.log(
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
