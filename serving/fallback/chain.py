"""The chain of hops: a request tries the arm's model version, then a fallback version, each
within its own budget, skipping open circuits; what failed says why an answer is degraded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving.fallback.breaker import Breakers
from serving.upstream import UpstreamError

T = TypeVar("T")


@dataclass(frozen=True)
class Hop:
    """One model version to try, with its time budget."""

    model: str  # model name on the server: "fraud-v4"
    version: str  # registry form: "fraud/4"
    timeout_s: float


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
