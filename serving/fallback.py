"""Safe degradation: per-hop budgets and circuit breakers over a chain of model versions, then
the rule-based fraud scorer or the popularity list; every such answer says it is degraded."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from features.catalog import EVENT_EPOCH_S, GENRES
from mlsd.settings import Settings
from models.fraud_rules import rule_reasons, rule_score
from serving.upstream import UpstreamError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The last resort of fraud scoring, when neither a model nor the feature store answers: the one
# rule the request alone can evaluate. Card-history rules (new device, foreign country, velocity)
# would fire on every request without the card's profile, so they are left out rather than
# guessed.
LARGE_AMOUNT = "large_amount"
LARGE_AMOUNT_WEIGHT = 0.5


# --- the chain of hops -----------------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One model version to try, with its time budget."""

    model: str  # model name on the server: "fraud-v4"
    version: str  # registry form: "fraud/4"
    timeout_s: float


@dataclass
class CircuitBreaker:
    """Skips a model whose recent calls mostly fail: open when at least `min_calls` of the last
    `window` calls were made and `failure_rate` of them failed; after `cooldown_s`, one trial
    call goes through (half-open): a success closes the circuit with a clean slate, a failure
    opens it again. A failure *rate*, not a run of failures: at a few hundred requests a second
    a busy model times out a few calls in a row now and then, and skipping it for the whole
    cooldown would degrade far more answers than the timeouts did.

    Only the trial's own answer decides the half-open state: at hundreds of requests a second,
    calls let through before the circuit opened are still answering after it opened, and
    their (old) news must neither close it nor restart its cooldown."""

    window: int
    min_calls: int
    failure_rate: float
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    min_failing_s: float = 0.0  # how long failures must have gone on before it opens
    outcomes: deque[bool] = field(default_factory=deque)  # True: the call failed
    opened_at: float | None = None
    trial_running: bool = False
    failing_since: float | None = None  # since when the window's failure rate is over the bar

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> Literal["call", "trial"] | None:
        """Whether a call may go: "call" (closed), "trial" (the half-open probe), None."""
        state = self.state
        if state == "closed":
            return "call"
        if state == "half_open" and not self.trial_running:
            self.trial_running = True
            return "trial"
        return None

    def record_success(self, trial: bool = False) -> None:
        if trial:  # the trial call answered: start afresh
            self.outcomes.clear()
            self.opened_at, self.trial_running = None, False
        elif self.opened_at is not None:
            return  # a call from before the circuit opened
        self._record(False)

    def record_failure(self, trial: bool = False) -> None:
        if trial:  # the trial call failed: wait another cooldown
            self.opened_at, self.trial_running = self.clock(), False
            return
        if self.opened_at is not None:
            return  # a call from before the circuit opened
        self._record(True)
        now = self.clock()
        if self.failing_since is not None and now - self.failing_since >= self.min_failing_s:
            self.opened_at = now

    def abandon(self, trial: bool) -> None:
        """A call that ended without an answer either way (cancelled): a trial frees its slot."""
        if trial:
            self.trial_running = False

    def _record(self, failed: bool) -> None:
        self.outcomes.append(failed)
        while len(self.outcomes) > self.window:
            self.outcomes.popleft()
        # The rate, not a run: a model failing most calls, with successes between, is failing.
        over = len(self.outcomes) >= self.min_calls and sum(self.outcomes) >= (
            self.failure_rate * len(self.outcomes)
        )
        if not over:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = self.clock()


@dataclass
class Breakers:
    """One circuit breaker per model name, all with the same policy."""

    window: int
    min_calls: int
    failure_rate: float
    cooldown_s: float
    min_failing_s: float = 0.0
    by_model: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __getitem__(self, model: str) -> CircuitBreaker:
        breaker = self.by_model.get(model)
        if breaker is None:
            breaker = self.by_model[model] = CircuitBreaker(
                self.window,
                self.min_calls,
                self.failure_rate,
                self.cooldown_s,
                min_failing_s=self.min_failing_s,
            )
        return breaker

    def states(self) -> dict[str, str]:
        return {model: b.state for model, b in sorted(self.by_model.items())}


@dataclass(frozen=True)
class HopFailure:
    model: str
    kind: str  # timeout | unavailable | bad_status | bad_response | circuit_open
    detail: str

    def __str__(self) -> str:
        return f"{self.model}: {self.kind}"


@dataclass(frozen=True)
class ChainResult(Generic[T]):
    """The first hop that answered (None: none did) and what failed before it."""

    answer: T | None
    hop: Hop | None
    failures: tuple[HopFailure, ...]


async def first_answer(
    hops: Sequence[Hop], call: Callable[[Hop], Awaitable[T]], breakers: Breakers
) -> ChainResult[T]:
    """Try each hop in order, each within its own budget, skipping open circuits."""
    failures: list[HopFailure] = []
    for hop in hops:
        breaker = breakers[hop.model]
        permit = breaker.allow()
        if permit is None:
            failures.append(HopFailure(hop.model, "circuit_open", "skipped: failing recently"))
            continue
        trial = permit == "trial"
        try:
            answer = await call(hop)
        except UpstreamError as err:
            breaker.record_failure(trial)
            failures.append(HopFailure(hop.model, err.kind, err.detail))
            continue
        except (ValueError, KeyError, IndexError, TypeError) as err:
            # The server answered, but not with what the contract promises.
            breaker.record_failure(trial)
            failures.append(HopFailure(hop.model, "bad_response", f"{type(err).__name__}: {err}"))
            continue
        except BaseException:
            breaker.abandon(trial)  # cancelled (the caller gave up): no verdict on the model
            raise
        breaker.record_success(trial)
        return ChainResult(answer, hop, tuple(failures))
    return ChainResult(None, None, tuple(failures))


def degraded_reason(failures: Sequence[HopFailure], answered_by: str) -> str | None:
    """Why an answer is degraded, for the response and the log (None: it is not)."""
    if not failures:
        return None
    return "; ".join(str(f) for f in failures) + f"; answered by {answered_by}"


# --- fraud: model outputs and the rule-based fallback ----------------------------------------


@dataclass(frozen=True)
class FraudAnswer:
    score: float
    decision: str  # block | allow
    reasons: tuple[str, ...]
    model_version: str  # "fraud/3", "rules" or "rules:request"
    card_unknown: bool = False
    features: dict[str, Any] | None = None


def _cell(outputs: Mapping[str, list[Any]], name: str, row: int, default: Any) -> Any:
    """Row `row` of output `name`, or `default` when the server sent no such output."""
    data = outputs.get(name)
    return default if data is None else data[row]


def fraud_answer_from_outputs(
    outputs: Mapping[str, list[Any]], version: str, row: int = 0
) -> FraudAnswer:
    """Row `row` of a fraud-vN V2 response (docs/inference-contract.md)."""
    score = float(outputs["score"][row])
    if not math.isfinite(score):
        raise ValueError(f"score is {score}")
    reasons = str(_cell(outputs, "reasons", row, "") or "")
    features = _cell(outputs, "features", row, None)
    return FraudAnswer(
        score=score,
        decision=str(outputs["decision"][row]),
        reasons=tuple(r for r in reasons.split(",") if r),
        model_version=str(_cell(outputs, "model_version", row, version) or version),
        card_unknown=bool(int(_cell(outputs, "card_unknown", row, 0) or 0)),
        features=json.loads(features) if features else None,
    )


def rule_answer(features: Mapping[str, Any], block_threshold: float) -> FraudAnswer:
    """The rule-based scorer over the served features (the model's own baseline)."""
    clean = {k: v for k, v in features.items() if isinstance(v, int | float)}
    score = rule_score(clean)
    return FraudAnswer(
        score=score,
        decision="block" if score >= block_threshold else "allow",
        reasons=tuple(rule_reasons(clean)),
        model_version="rules",
        card_unknown=bool(features.get("card_unknown", False)),
        features=dict(clean),
    )


def request_only_answer(
    amount: float, large_amount_usd: float, block_threshold: float
) -> FraudAnswer:
    """The last resort: the rule over the request's own fields only."""
    fires = amount > large_amount_usd
    score = LARGE_AMOUNT_WEIGHT if fires else 0.0
    reasons = (LARGE_AMOUNT,) if fires else ()
    return FraudAnswer(
        score=score,
        decision="block" if score >= block_threshold else "allow",
        reasons=reasons,
        model_version="rules:request",
    )


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


# --- recs: model outputs and the popularity fallback -----------------------------------------


@dataclass(frozen=True)
class RecsAnswer:
    items: tuple[tuple[str, float], ...]  # (item_id, score), best first
    path: str  # model | popularity
    model_version: str  # "recsys/1" or "popularity"


def recs_answer_from_outputs(
    outputs: Mapping[str, list[Any]], version: str, row: int = 0
) -> RecsAnswer:
    """Row `row` of a recsys-vN V2 response (docs/inference-contract.md)."""
    ids = [i for i in str(outputs["item_ids"][row] or "").split(",") if i]
    raw_scores = [s for s in str(_cell(outputs, "scores", row, "") or "").split(",") if s]
    scores = [float(s) for s in raw_scores] if raw_scores else [0.0] * len(ids)
    if len(scores) != len(ids):
        raise ValueError(f"{len(ids)} item ids but {len(scores)} scores")
    return RecsAnswer(
        items=tuple(zip(ids, scores, strict=True)),
        path=str(_cell(outputs, "path", row, "model")),
        model_version=str(_cell(outputs, "model_version", row, version) or version),
    )


class PopularityList:
    """The recommender's last resort: the most played items overall and per genre.

    Where it comes from: the recsys model server's own cold-start answer (an unknown user gets
    the popularity path of the served model), asked in the background every few minutes while
    the server is up, so the fallback always matches the model's notion of popular and costs
    nothing on the request path. It is kept in <data_dir>/router/popularity.json, so a router
    that starts while the model server is down still has it; on a first start with neither, it
    is seeded from the offline store's item_stats feature table (plays over 7 days).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.overall: list[tuple[str, float]] = []
        self.by_genre: dict[str, list[tuple[str, float]]] = {}
        self.source = "none"
        self.updated_at: float | None = None
        self._save_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
            self.overall = [(str(i), float(s)) for i, s in saved["overall"]]
            self.by_genre = {
                g: [(str(i), float(s)) for i, s in items] for g, items in saved["by_genre"].items()
            }
            self.source, self.updated_at = f"{saved['source']} (saved)", saved["updated_at"]
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def save(self) -> None:
        """Write the list atomically (a reader sees the old file or the new one, whole)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._save_lock:  # saves come from worker threads: the seed and the refreshes
            self._save()

    def _save(self) -> None:
        partial = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_text(
            json.dumps(
                {
                    "source": self.source,
                    "updated_at": self.updated_at,
                    "overall": self.overall,
                    "by_genre": self.by_genre,
                }
            )
        )
        os.replace(partial, self.path)

    def update(
        self,
        overall: Sequence[tuple[str, float]],
        by_genre: Mapping[str, Sequence[tuple[str, float]]],
        source: str,
    ) -> None:
        if overall:
            self.overall = list(overall)
        self.by_genre.update({g: list(v) for g, v in by_genre.items() if v})
        self.source, self.updated_at = source, time.time()

    def recommend(self, k: int, genre_hint: str | None = None) -> RecsAnswer:
        """Top k, the hinted genre's first (then the overall list, without repeats)."""
        chosen: list[tuple[str, float]] = []
        seen: set[str] = set()
        for item, score in [*self.by_genre.get(genre_hint or "", []), *self.overall]:
            if item not in seen:
                seen.add(item)
                chosen.append((item, score))
            if len(chosen) == k:
                break
        return RecsAnswer(tuple(chosen), "popularity", "popularity")

    def seed_from_feature_table(self, settings: Settings, keep: int = 500) -> bool:
        """Fill an empty list from the item_stats feature table; False when there is none."""
        try:
            import pyarrow.parquet as pq

            from features.catalog import ITEM_POPULARITY_WINDOW
            from features.tables import table_path

            plays = f"item_plays_{ITEM_POPULARITY_WINDOW[0]}"
            frame = pq.read_table(
                table_path(settings, "item_stats"),
                columns=["item_id", "event_timestamp", plays, "item_genre"],
            ).to_pandas()
        except Exception as err:
            log.info("no item_stats table to seed the popularity fallback: %s", err)
            return False
        latest = frame.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
        latest = latest.sort_values([plays, "item_id"], ascending=[False, True])
        total = max(float(latest[plays].sum()), 1.0)

        def ranked(rows: Any) -> list[tuple[str, float]]:
            top = rows.head(keep)
            return [
                (str(i), float(p) / total) for i, p in zip(top["item_id"], top[plays], strict=True)
            ]

        self.update(
            ranked(latest),
            {g: ranked(latest[latest["item_genre"] == g]) for g in GENRES},
            "item_stats feature table",
        )
        return True
