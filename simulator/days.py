"""One simulated day of each world, planned for live play: the batches it will land, the
requests it sends (a sample, at their simulated time) and how its people answer what the
platform served. Pure functions of (settings, day, scenario) plus the world's own seed.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

from mlsd.settings import Settings
from simulator import fraud, recsys
from simulator.clock import DayPlan
from simulator.landing import break_schema
from simulator.scenarios import get_scenario

# The request fields the router's fraud API takes, from the landed transaction columns.
FRAUD_BODY_COLUMNS = ("card_id", "merchant_id", "amount", "country", "device_id")


def plan_day(
    settings: Settings,
    product: str,
    day: dt.date,
    scenario: str | None,
    defect_index: int = 0,
) -> DayPlan:
    """Simulate `day` of `product`'s world under `scenario` (None: the world as it is).

    A data-defect scenario breaks the transactions as the broken upstream sends them, one defect
    kind a day in turn (`defect_index`): live requests and the landed batch carry the same defect.
    """
    sim = settings.simulator
    chosen = get_scenario(scenario, product)
    if product == "fraud":
        pop = fraud.build_population(sim.fraud, sim.seed, sim.start_date)
        out = fraud.simulate_day(pop, sim.fraud, chosen.fraud, sim.seed, day)
        batches = dict(out.batches)
        if chosen.fraud.defects:
            kind = chosen.fraud.defects[defect_index % len(chosen.fraud.defects)]
            batches["transactions"] = break_schema(batches["transactions"], kind)
        return DayPlan(day, scenario, batches, out.truth)
    if product == "recsys":
        rpop = recsys.build_population(
            sim.recsys, sim.seed, sim.start_date, day, chosen.recsys, day
        )
        out = recsys.simulate_day(rpop, sim.recsys, chosen.recsys, sim.seed, day)
        return DayPlan(day, scenario, dict(out.batches), out.truth)
    raise ValueError(f"unknown world {product!r}; known: fraud, recsys")


def fraud_body(row: dict[str, Any]) -> dict[str, Any]:
    """A landed transaction as the body of `POST /v1/fraud/score`, defects included: a renamed
    column is sent renamed and a null as null, as the broken upstream would send them."""
    body: dict[str, Any] = {}
    for column in (*FRAUD_BODY_COLUMNS, "amount_usd"):
        if column in row:
            value = row[column]
            if isinstance(value, float) and math.isnan(value):
                if column in ("amount", "amount_usd"):
                    continue  # a day spliced across the rename holds both columns, half empty
                value = None
            body[column] = value
    body["timestamp"] = pd.Timestamp(row["event_timestamp"]).isoformat()
    return body


def sessions_of(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per listening session (its first slot's time and the listener), in time order."""
    if interactions.empty:
        return pd.DataFrame(columns=["session_id", "event_timestamp", "user_id"])
    first = interactions.sort_values("event_timestamp").groupby("session_id", sort=False).first()
    return (
        first[["event_timestamp", "user_id"]]
        .reset_index()
        .sort_values("event_timestamp", kind="stable")
        .reset_index(drop=True)
    )


class Listeners:
    """How the world's listeners answer a slate the platform served: the simulator's own choice
    model (taste match, popularity, position bias), so clicks follow the hidden truth."""

    def __init__(self, settings: Settings, day: dt.date, scenario: str | None) -> None:
        sim = settings.simulator
        knobs = get_scenario(scenario, "recsys").recsys
        self.pop = recsys.build_population(sim.recsys, sim.seed, sim.start_date, day, knobs, day)
        self.user_index = {u: i for i, u in enumerate(self.pop.user_ids.tolist())}
        self.item_index = {it: i for i, it in enumerate(self.pop.item_ids.tolist())}
        self.rng = np.random.default_rng([sim.seed, 777, day.toordinal()])

    def plays(self, user_id: str, item_ids: list[str]) -> list[bool]:
        """Whether the listener plays each served item (slot order); unknown ids are skipped."""
        user = self.user_index.get(user_id)
        known = [self.item_index.get(i) for i in item_ids]
        if user is None:
            return [False] * len(item_ids)
        out = []
        for position, item in enumerate(known):
            if item is None:
                out.append(False)
                continue
            taste = float(self.pop.user_taste[user] @ self.pop.item_factor[item])
            utility = 3.0 * taste + 0.1 * math.log(float(self.pop.item_popularity[item])) - 1.0
            p_play = 1.0 / (1.0 + math.exp(-utility)) / math.log2(position + 2.0)
            out.append(bool(self.rng.random() < p_play))
        return out


def served_interactions(served: list[dict[str, Any]], template: pd.DataFrame) -> pd.DataFrame:
    """The interactions of sessions the platform served, slot by slot, in the landed batch's
    columns: what lands is what the listener saw and did."""
    rows = []
    for s in served:
        # Slots are 3 s apart; a session served just before midnight starts early enough that its
        # last slot stays in the day, or the gate quarantines the whole day's batch.
        start = pd.Timestamp(s["at"])
        day_end = start.normalize() + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        start = min(start, day_end - pd.Timedelta(seconds=3 * max(len(s["items"]) - 1, 0)))
        for position, (item, played) in enumerate(zip(s["items"], s["plays"], strict=True)):
            rows.append(
                {
                    "interaction_id": s["first_interaction_id"] + position,
                    "event_timestamp": start + pd.Timedelta(seconds=3 * position),
                    "session_id": s["session_id"],
                    "user_id": s["user_id"],
                    "item_id": item,
                    "position": position,
                    "event": "play" if played else "skip",
                    "dwell_seconds": 120.0 if played else 5.0,
                }
            )
    frame = pd.DataFrame(rows, columns=list(template.columns))
    for column in template.columns:
        frame[column] = frame[column].astype(template[column].dtype)
    return frame
