"""The fraud rules: what a fraud team writes before it has a model, and the scorer the router
degrades to when no model answers. Plain Python (no scikit-learn), so the router can use them
without loading it; `models.rules.RuleScorer` wraps the same table as a training baseline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

Rules = tuple[tuple[str, float, float], ...]

# (feature, fires when value > this, weight)
FRAUD_RULES: Rules = (
    ("is_new_device", 0.5, 0.35),
    ("is_foreign_country", 0.5, 0.25),
    ("amount_over_card_mean", 4.0, 0.30),
    ("card_tx_count_1h", 4.0, 0.30),
    ("merchant_chargeback_rate_30d", 0.02, 0.30),
)


def _fired(features: Mapping[str, float], rules: Rules) -> Iterator[tuple[str, float]]:
    """(name, weight) of each rule that fires; a missing feature never fires."""
    for name, above, weight in rules:
        if float(features.get(name, 0.0) or 0.0) > above:
            yield name, weight


def rule_score(features: Mapping[str, float], rules: Rules = FRAUD_RULES) -> float:
    """Score one request's features: the weights of the rules that fire, at most 1."""
    return min(sum(weight for _, weight in _fired(features, rules)), 1.0)


def rule_reasons(features: Mapping[str, float], rules: Rules = FRAUD_RULES) -> list[str]:
    """The rules that fire, as reason codes."""
    return [name for name, _ in _fired(features, rules)]
