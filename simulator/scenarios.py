"""Drift scenarios: the one place where the simulated world is told to change, each named and documented.

A scenario is a set of knob values. The worlds read the knobs; nothing else in the project knows
what a scenario does, so monitoring has to *detect* drift from data, as it would in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DefectKind = Literal["renamed-column", "nulls", "unit-change"]
DriftKind = Literal[
    "none", "covariate", "concept", "prior", "data-defect", "cold-start", "preference"
]


@dataclass(frozen=True)
class FraudKnobs:
    """How the payments world differs from its normal self."""

    amount_multiplier: float = 1.0
    # Multiplies the share of legitimate spending in these merchant categories.
    category_boost: dict[str, float] = field(default_factory=dict)
    # Multiplies every fraud pattern's frequency (prior shift: P(y) moves, P(x | y) does not).
    fraud_multiplier: float = 1.0
    # Concept drift: fraud now hides in transactions that look exactly like normal ones.
    night_online_fraud: bool = False
    # Upstream defects in the landed transactions batch, one kind per day, in turn.
    defects: tuple[DefectKind, ...] = ()


@dataclass(frozen=True)
class RecsysKnobs:
    """How the listening world differs from its normal self."""

    # On the scenario's first day, this many times the usual new items are released at once.
    catalog_drop_multiplier: float = 1.0
    # How far every listener's taste moves towards one genre (0 = not at all, 1 = all the way).
    taste_shift: float = 0.0
    taste_shift_genre: str = "jazz"


@dataclass(frozen=True)
class Scenario:
    """A named change of the simulated world."""

    name: str
    world: Literal["fraud", "recsys"]
    kind: DriftKind
    summary: str
    fraud: FraudKnobs = FraudKnobs()
    recsys: RecsysKnobs = RecsysKnobs()


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "amount-inflation",
            "fraud",
            "covariate",
            "Every amount is 1.8x larger (inflation, a currency re-peg). The inputs move; "
            "which transactions are fraud does not.",
            fraud=FraudKnobs(amount_multiplier=1.8),
        ),
        Scenario(
            "merchant-mix",
            "fraud",
            "covariate",
            "Spending moves online: online retail, gaming and gift cards triple, groceries halve. "
            "The mix of merchant categories (and channels) shifts; fraud patterns stay.",
            fraud=FraudKnobs(
                category_boost={
                    "online_retail": 3.0,
                    "gaming": 3.0,
                    "gift_cards": 3.0,
                    "grocery": 0.5,
                }
            ),
        ),
        Scenario(
            "new-fraud-pattern",
            "fraud",
            "concept",
            "Fraudsters use malware on the cardholder's own device: night-time online purchases "
            "(electronics, gift cards, online retail) at home, normal amounts, known device, become "
            "fraud. The inputs are drawn exactly as before; only their relation to the label changes.",
            fraud=FraudKnobs(night_online_fraud=True),
        ),
        Scenario(
            "fraud-surge",
            "fraud",
            "prior",
            "A fraud ring scales up: every known fraud pattern is 4x as frequent. The fraud rate "
            "rises; what a fraud looks like does not change.",
            fraud=FraudKnobs(fraud_multiplier=4.0),
        ),
        Scenario(
            "schema-break",
            "fraud",
            "data-defect",
            "An upstream release breaks the transactions feed, one defect a day in turn: "
            "`amount` renamed to `amount_usd`, nulls in `card_id` and `device_id`, amounts sent in cents.",
            fraud=FraudKnobs(defects=("renamed-column", "nulls", "unit-change")),
        ),
        Scenario(
            "new-catalog",
            "recsys",
            "cold-start",
            "A label's catalogue lands at once: on the first day 40x the usual new items are "
            "released, and the platform promotes new items, so many plays go to items with no history.",
            recsys=RecsysKnobs(catalog_drop_multiplier=40.0),
        ),
        Scenario(
            "taste-shift",
            "recsys",
            "preference",
            "Listeners' tastes move 60% of the way towards jazz (a viral trend): the genres they "
            "play shift; the catalogue does not.",
            recsys=RecsysKnobs(taste_shift=0.6, taste_shift_genre="jazz"),
        ),
    )
}

NO_DRIFT = Scenario("none", "fraud", "none", "The world as it normally is.")


def get_scenario(name: str | None, world: str) -> Scenario:
    """The scenario called `name` for `world` (None means no drift); a clear error otherwise."""
    if name is None or name == "none":
        return Scenario("none", world, "none", NO_DRIFT.summary)  # type: ignore[arg-type]
    scenario = SCENARIOS.get(name)
    if scenario is None or scenario.world != world:
        known = ", ".join(s.name for s in SCENARIOS.values() if s.world == world)
        raise ValueError(f"unknown {world} scenario {name!r}; known: {known}")
    return scenario
