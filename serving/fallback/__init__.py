"""Safe degradation: per-hop budgets and circuit breakers over a chain of model versions, then
the rule-based fraud scorer or the popularity list; every such answer says it is degraded.

Its rooms: `breaker` (circuit breakers), `chain` (hops tried in order), `answers` (V2 answers
decoded), `rules` (the rule-based fraud fallbacks), `online_features` (the Feast lookup's thread
pool), `popularity` (the recommender's popularity list).
"""

from serving.fallback.answers import (
    FraudAnswer,
    RecsAnswer,
    fraud_answer_from_outputs,
    recs_answer_from_outputs,
)
from serving.fallback.breaker import Breakers, CircuitBreaker
from serving.fallback.chain import ChainResult, Hop, HopFailure, degraded_reason, first_answer
from serving.fallback.online_features import OnlineFeatureLookup
from serving.fallback.popularity import PopularityList
from serving.fallback.rules import (
    LARGE_AMOUNT,
    LARGE_AMOUNT_WEIGHT,
    request_only_answer,
    rule_answer,
)

__all__ = [
    "LARGE_AMOUNT",
    "LARGE_AMOUNT_WEIGHT",
    "Breakers",
    "ChainResult",
    "CircuitBreaker",
    "FraudAnswer",
    "Hop",
    "HopFailure",
    "OnlineFeatureLookup",
    "PopularityList",
    "RecsAnswer",
    "degraded_reason",
    "first_answer",
    "fraud_answer_from_outputs",
    "recs_answer_from_outputs",
    "request_only_answer",
    "rule_answer",
]
