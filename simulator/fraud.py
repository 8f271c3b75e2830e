"""The simulated card-payments world: cardholders, merchants, fraudsters and late chargebacks.

Fraud follows three patterns a model can learn from features:
- card testing: a burst of tiny online amounts from a new device within minutes, then one big one;
- account takeover: a new device, a foreign country, an amount many times the card's usual, at night;
- compromised merchants: a few merchants whose customers' cards are defrauded far more often.
Labels arrive as chargebacks days after the transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsd.settings import FraudWorldSettings
from simulator.common import (
    COUNTRIES,
    COUNTRY_WEIGHTS,
    NIGHT_HOUR_WEIGHTS,
    SECONDS_PER_DAY,
    DayOutput,
    day_start_us,
    ids,
    seconds_in_day,
    stream,
    to_timestamps,
)
from simulator.scenarios import FraudKnobs

CATEGORIES = (
    "grocery",
    "restaurants",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "gaming",
    "gift_cards",
    "pharmacy",
    "apparel",
)
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
# Share of legitimate spending per category, and how much a purchase there costs relative to
# the cardholder's usual amount.
CATEGORY_WEIGHTS = np.array([0.22, 0.18, 0.10, 0.04, 0.05, 0.15, 0.05, 0.03, 0.08, 0.10])
CATEGORY_AMOUNT_FACTOR = np.array([1.0, 0.8, 1.1, 5.0, 3.5, 1.2, 0.5, 1.5, 0.6, 1.4])
# Probability that a purchase in the category is made online.
CATEGORY_ONLINE_SHARE = np.array([0.05, 0.05, 0.0, 0.6, 0.4, 1.0, 1.0, 0.8, 0.1, 0.4])
CARD_TESTING_CATEGORIES = np.array([_CAT["gaming"], _CAT["online_retail"], _CAT["gift_cards"]])
TAKEOVER_CATEGORIES = np.array(
    [_CAT["electronics"], _CAT["travel"], _CAT["gift_cards"], _CAT["apparel"]]
)
NIGHT_ONLINE_CATEGORIES = np.array([_CAT["electronics"], _CAT["gift_cards"], _CAT["online_retail"]])

# Stream keys: each kind of draw has its own stream, so changing one never shifts another.
_POPULATION, _LEGIT, _CARD_TESTING, _TAKEOVER, _COMPROMISED, _LABELS, _CONCEPT = range(7)
_TX_IDS_PER_DAY = 10_000_000
_MAX_AMOUNT = 20_000.0


@dataclass(frozen=True)
class FraudPopulation:
    """Who exists in the payments world. Fixed by the seed; days come and go around it."""

    card_ids: np.ndarray
    home_country: np.ndarray  # index into COUNTRIES
    spend_log_mean: np.ndarray  # log of the card's typical amount
    spend_log_sd: np.ndarray
    activity: np.ndarray  # multiplier of the card's transaction rate
    device_offset: np.ndarray  # card c's devices are device_ids[offset[c] : offset[c] + n[c]]
    device_count: np.ndarray
    device_ids: np.ndarray
    issued_at_us: np.ndarray
    merchant_ids: np.ndarray
    merchant_category: np.ndarray  # index into CATEGORIES
    merchant_country: np.ndarray
    merchant_compromised: np.ndarray
    onboarded_at_us: np.ndarray
    # Merchants sorted by category, with start/count per category, for vectorised picking;
    # and sorted by (country, category), with start/count per pair, for shopping near home.
    merchants_by_category: np.ndarray
    category_start: np.ndarray
    category_count: np.ndarray
    merchants_by_place: np.ndarray
    place_start: np.ndarray  # [country, category]
    place_count: np.ndarray


def build_population(cfg: FraudWorldSettings, seed: int, epoch: dt.date) -> FraudPopulation:
    """Draw cardholders and merchants for `seed`."""
    rng = stream(seed, _POPULATION)
    n_cards, n_merchants = cfg.n_cards, cfg.n_merchants
    epoch_us = day_start_us(epoch)
    year_us = 365 * SECONDS_PER_DAY * 1_000_000

    device_count = rng.choice([1, 2, 3], size=n_cards, p=[0.5, 0.35, 0.15])
    device_offset = np.cumsum(device_count) - device_count
    owner = np.repeat(np.arange(n_cards), device_count)
    slot = np.arange(device_count.sum()) - device_offset[owner]
    device_ids = np.array(
        [f"dev_{c:06d}_{k}" for c, k in zip(owner.tolist(), slot.tolist(), strict=True)],
        dtype=object,
    )

    merchant_category = rng.choice(len(CATEGORIES), size=n_merchants, p=CATEGORY_WEIGHTS)
    # Every category has at least one merchant, so every purchase finds somewhere to happen.
    merchant_category[: len(CATEGORIES)] = np.arange(len(CATEGORIES))
    merchant_country = rng.choice(len(COUNTRIES), size=n_merchants, p=COUNTRY_WEIGHTS)
    n_compromised = (
        max(1, round(cfg.compromised_merchant_share * n_merchants))
        if cfg.compromised_merchant_share > 0
        else 0
    )
    merchant_compromised = np.zeros(n_merchants, dtype=bool)
    merchant_compromised[rng.choice(n_merchants, size=n_compromised, replace=False)] = True

    order = np.argsort(merchant_category, kind="stable")
    count = np.bincount(merchant_category, minlength=len(CATEGORIES))
    start = np.cumsum(count) - count
    place = merchant_country * len(CATEGORIES) + merchant_category
    place_order = np.argsort(place, kind="stable")
    place_count = np.bincount(place, minlength=len(COUNTRIES) * len(CATEGORIES))
    place_start = np.cumsum(place_count) - place_count
    return FraudPopulation(
        card_ids=ids("card_", np.arange(n_cards), 6),
        home_country=rng.choice(len(COUNTRIES), size=n_cards, p=COUNTRY_WEIGHTS),
        spend_log_mean=rng.normal(np.log(35.0), 0.6, n_cards),
        spend_log_sd=rng.uniform(0.5, 0.9, n_cards),
        activity=rng.gamma(2.0, 0.5, n_cards),
        device_offset=device_offset,
        device_count=device_count,
        device_ids=device_ids,
        issued_at_us=epoch_us - (rng.random(n_cards) * 4 * year_us).astype(np.int64),
        merchant_ids=ids("m_", np.arange(n_merchants), 5),
        merchant_category=merchant_category,
        merchant_country=merchant_country,
        merchant_compromised=merchant_compromised,
        onboarded_at_us=epoch_us - (rng.random(n_merchants) * 6 * year_us).astype(np.int64),
        merchants_by_category=order,
        category_start=start,
        category_count=count,
        merchants_by_place=place_order,
        place_start=place_start.reshape(len(COUNTRIES), len(CATEGORIES)),
        place_count=place_count.reshape(len(COUNTRIES), len(CATEGORIES)),
    )


def _pick_merchants(
    pop: FraudPopulation,
    rng: np.random.Generator,
    category: np.ndarray,
    country: np.ndarray | None = None,
) -> np.ndarray:
    """One merchant per purchase in the given category (and country, where it has one), with a
    popularity skew: a few merchants of each kind get most of the custom."""
    skewed = rng.random(category.size) ** 1.6
    offset = (skewed * pop.category_count[category]).astype(np.int64)
    merchant = pop.merchants_by_category[pop.category_start[category] + offset]
    if country is not None:
        count = pop.place_count[country, category]
        local = count > 0
        place_offset = (skewed[local] * count[local]).astype(np.int64)
        merchant[local] = pop.merchants_by_place[
            pop.place_start[country[local], category[local]] + place_offset
        ]
    return merchant


def _amounts(
    pop: FraudPopulation, rng: np.random.Generator, card: np.ndarray, category: np.ndarray
) -> np.ndarray:
    log_amount = pop.spend_log_mean[card] + np.log(CATEGORY_AMOUNT_FACTOR[category])
    return np.exp(log_amount + pop.spend_log_sd[card] * rng.standard_normal(card.size))


@dataclass
class _Rows:
    """Column arrays of one day's transactions, before they become a DataFrame."""

    card: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    t_us: np.ndarray
    device: np.ndarray
    online: np.ndarray
    fraud: np.ndarray

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _Rows.__dataclass_fields__)
        )


def _legit_day(
    pop: FraudPopulation, cfg: FraudWorldSettings, knobs: FraudKnobs, seed: int, day: dt.date
) -> _Rows:
    rng = stream(seed, _LEGIT, day.toordinal())
    counts = rng.poisson(cfg.tx_per_card_per_day * pop.activity)
    card = np.repeat(np.arange(pop.card_ids.size), counts)
    weights = CATEGORY_WEIGHTS.copy()
    for name, boost in knobs.category_boost.items():
        weights[_CAT[name]] *= boost
    category = rng.choice(len(CATEGORIES), size=card.size, p=weights / weights.sum())
    # People mostly shop at home; travel and online shopping cross borders more often.
    abroad = rng.random(card.size) < np.where(category == _CAT["travel"], 0.5, 0.03)
    country = np.where(
        abroad,
        rng.choice(len(COUNTRIES), size=card.size, p=COUNTRY_WEIGHTS),
        pop.home_country[card],
    )
    merchant = _pick_merchants(pop, rng, category, country)
    t_us = day_start_us(day) + (seconds_in_day(rng, card.size) * 1e6).astype(np.int64)
    device_slot = (rng.random(card.size) * pop.device_count[card]).astype(np.int64)
    device = pop.device_ids[pop.device_offset[card] + device_slot]
    online = rng.random(card.size) < CATEGORY_ONLINE_SHARE[category]
    amount = _amounts(pop, rng, card, category)
    # Compromised merchants: the purchase itself looks normal; the card is defrauded.
    at_bad_merchant = pop.merchant_compromised[merchant]
    p_fraud = min(1.0, cfg.compromised_merchant_fraud_prob * knobs.fraud_multiplier)
    fraud = at_bad_merchant & (
        stream(seed, _COMPROMISED, day.toordinal()).random(card.size) < p_fraud
    )
    return _Rows(card, merchant, amount, t_us, device, online, fraud)


def _card_testing_day(
    pop: FraudPopulation, cfg: FraudWorldSettings, knobs: FraudKnobs, seed: int, day: dt.date
) -> _Rows:
    rng = stream(seed, _CARD_TESTING, day.toordinal())
    n_cards = pop.card_ids.size
    attacks = rng.poisson(cfg.card_testing_per_day * knobs.fraud_multiplier * n_cards / 10_000)
    burst = rng.integers(5, 16, size=attacks)  # tiny probes, then one cash-out
    attack = np.repeat(np.arange(attacks), burst)
    first = (np.cumsum(burst) - burst).astype(np.int64)
    card = rng.integers(0, n_cards, size=attacks)[attack]
    start_s = rng.random(attacks) * (SECONDS_PER_DAY - 3600)
    gaps = rng.exponential(40.0, size=attack.size)
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], burst)
    t_us = day_start_us(day) + ((start_s[attack] + elapsed) * 1e6).astype(np.int64)
    category = CARD_TESTING_CATEGORIES[
        rng.integers(0, CARD_TESTING_CATEGORIES.size, size=attack.size)
    ]
    amount = rng.uniform(0.5, 5.0, size=attack.size)
    last = first + burst - 1
    amount[last] = rng.uniform(200.0, 1500.0, size=attacks)
    device = np.array([f"dev_x{day.toordinal()}_ct{a}" for a in attack.tolist()], dtype=object)
    return _Rows(
        card,
        _pick_merchants(pop, rng, category),
        amount,
        t_us,
        device,
        np.ones(attack.size, dtype=bool),
        np.ones(attack.size, dtype=bool),
    )


def _takeover_day(
    pop: FraudPopulation, cfg: FraudWorldSettings, knobs: FraudKnobs, seed: int, day: dt.date
) -> _Rows:
    rng = stream(seed, _TAKEOVER, day.toordinal())
    n_cards = pop.card_ids.size
    takeovers = rng.poisson(
        cfg.account_takeovers_per_day * knobs.fraud_multiplier * n_cards / 10_000
    )
    size = rng.integers(1, 4, size=takeovers)
    victim = np.repeat(np.arange(takeovers), size)
    card = rng.integers(0, n_cards, size=takeovers)[victim]
    start_s = seconds_in_day(rng, takeovers, NIGHT_HOUR_WEIGHTS)
    offset_s = rng.uniform(0, 7200, size=victim.size)
    t_us = day_start_us(day) + (
        np.minimum(start_s[victim] + offset_s, SECONDS_PER_DAY - 1) * 1e6
    ).astype(np.int64)
    category = TAKEOVER_CATEGORIES[rng.integers(0, TAKEOVER_CATEGORIES.size, size=victim.size)]
    merchant = _pick_merchants(pop, rng, category)
    # Re-draw merchants in the cardholder's own country: a takeover happens abroad.
    for _ in range(8):
        at_home = pop.merchant_country[merchant] == pop.home_country[card]
        if not at_home.any():
            break
        merchant[at_home] = _pick_merchants(pop, rng, category[at_home])
    amount = np.exp(pop.spend_log_mean[card]) * rng.uniform(5.0, 20.0, size=victim.size)
    device = np.array([f"dev_x{day.toordinal()}_ato{v}" for v in victim.tolist()], dtype=object)
    return _Rows(
        card,
        merchant,
        amount,
        t_us,
        device,
        rng.random(victim.size) < 0.7,
        np.ones(victim.size, dtype=bool),
    )


def simulate_day(
    pop: FraudPopulation, cfg: FraudWorldSettings, knobs: FraudKnobs, seed: int, day: dt.date
) -> DayOutput:
    """One day of the payments world: its transactions and the chargebacks they will cause."""
    rows = _Rows.concat(
        [
            _legit_day(pop, cfg, knobs, seed, day),
            _card_testing_day(pop, cfg, knobs, seed, day),
            _takeover_day(pop, cfg, knobs, seed, day),
        ]
    )
    order = np.argsort(rows.t_us, kind="stable")
    rows = _Rows(*(getattr(rows, f)[order] for f in _Rows.__dataclass_fields__))
    amount = np.clip(np.round(rows.amount * knobs.amount_multiplier, 2), 0.01, _MAX_AMOUNT)
    fraud = rows.fraud.copy()
    if knobs.night_online_fraud:
        # Concept drift: relabel, with a stream of its own, transactions drawn exactly as before.
        hour = (rows.t_us - day_start_us(day)) // 3_600_000_000
        category = pop.merchant_category[rows.merchant]
        target = np.isin(category, NIGHT_ONLINE_CATEGORIES) & (hour < 6) & rows.online
        fraud |= target & (stream(seed, _CONCEPT, day.toordinal()).random(fraud.size) < 0.5)

    tx_ids = day.toordinal() * _TX_IDS_PER_DAY + np.arange(1, order.size + 1, dtype=np.int64)
    transactions = pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "event_timestamp": to_timestamps(rows.t_us),
            "card_id": pop.card_ids[rows.card],
            "merchant_id": pop.merchant_ids[rows.merchant],
            "merchant_category": np.array(CATEGORIES, dtype=object)[
                pop.merchant_category[rows.merchant]
            ],
            "amount": amount,
            "country": np.array(COUNTRIES, dtype=object)[pop.merchant_country[rows.merchant]],
            "device_id": rows.device,
            "channel": np.where(rows.online, "online", "pos").astype(object),
        }
    )

    label_rng = stream(seed, _LABELS, day.toordinal())
    reported = fraud & (label_rng.random(fraud.size) < cfg.chargeback_share)
    # At least a day late: the issuer hears of it from the cardholder, then files it.
    delay_days = 1.0 + label_rng.gamma(
        2.0, max(cfg.chargeback_delay_days_mean - 1.0, 0.01) / 2.0, size=fraud.size
    )
    reported_us = rows.t_us + (delay_days * SECONDS_PER_DAY * 1e6).astype(np.int64)
    chargebacks = pd.DataFrame(
        {
            "transaction_id": tx_ids[reported],
            "card_id": transactions["card_id"].to_numpy()[reported],
            "merchant_id": transactions["merchant_id"].to_numpy()[reported],
            "amount": amount[reported],
            "transaction_timestamp": to_timestamps(rows.t_us[reported]),
            "reported_at": to_timestamps(reported_us[reported]),
            "reason": np.full(int(reported.sum()), "fraud", dtype=object),
        }
    )
    # The truth includes frauds never reported: the world knows, the platform never will.
    truth = pd.DataFrame({"transaction_id": tx_ids, "is_fraud": fraud})
    return DayOutput({"transactions": transactions, "chargebacks": chargebacks}, truth)


def entity_snapshots(pop: FraudPopulation) -> dict[str, pd.DataFrame]:
    """The cards and merchants that exist (landed with the first simulated day)."""
    return {
        "cards": pd.DataFrame(
            {
                "card_id": pop.card_ids,
                "home_country": np.array(COUNTRIES, dtype=object)[pop.home_country],
                "issued_at": to_timestamps(pop.issued_at_us),
            }
        ),
        "merchants": pd.DataFrame(
            {
                "merchant_id": pop.merchant_ids,
                "merchant_category": np.array(CATEGORIES, dtype=object)[pop.merchant_category],
                "country": np.array(COUNTRIES, dtype=object)[pop.merchant_country],
                "onboarded_at": to_timestamps(pop.onboarded_at_us),
            }
        ),
    }
