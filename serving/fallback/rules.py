"""The fraud fallback without a model: the rule-based scorer over the card's online features,
and, without those either, the one rule the request alone can evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.fraud_rules import rule_reasons, rule_score
from serving.fallback.answers import FraudAnswer

# The last resort of fraud scoring, when neither a model nor the feature store answers: the one
# rule the request alone can evaluate. Card-history rules (new device, foreign country, velocity)
# would fire on every request without the card's profile, so they are left out rather than
# guessed.
LARGE_AMOUNT = "large_amount"
LARGE_AMOUNT_WEIGHT = 0.5


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
