"""The world's clock and its days: simulated time running faster than real time, and what one
simulated day holds (pure: no I/O, no wall clock of its own, so tests drive it step by step).

A day is planned once, under the scenario in force; a scenario switched mid-day replaces the
rest of the day from the switch on (`DayPlan.switch`), so live traffic and the batch that lands
change at the same simulated instant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simulator.common import SECONDS_PER_DAY

# A scenario switched mid-day re-simulates the day; its rows get ids this far above the
# previous plan's so the spliced day never holds an id twice (a day has ~10^4 rows; the
# worlds leave 10^7 ids per day).
SWITCH_ID_OFFSET = 1_000_000
# The id columns that must stay unique within a day, per event type.
ID_COLUMNS = {
    "transactions": ("transaction_id",),
    "chargebacks": ("transaction_id",),
    "interactions": ("interaction_id", "session_id"),
}
# The event type each world's live traffic is drawn from (its truth is keyed by its first id).
MAIN_EVENTS = {"fraud": "transactions", "recsys": "interactions"}
# Which column times a row, per event type (entity snapshots land whole).
TIME_COLUMNS = {
    "transactions": "event_timestamp",
    "chargebacks": "transaction_timestamp",
    "interactions": "event_timestamp",
}


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


@dataclass(frozen=True)
class SimClock:
    """Simulated time as a linear function of wall time: `anchor_sim` at `anchor_wall`, then
    one simulated day per `seconds_per_day` wall seconds."""

    anchor_sim: dt.datetime
    anchor_wall: float
    seconds_per_day: float

    def __post_init__(self) -> None:
        if self.seconds_per_day <= 0:
            raise ValueError("seconds_per_day must be positive")
        if self.anchor_sim.tzinfo is None:
            raise ValueError("anchor_sim must be timezone-aware (UTC)")

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        return SECONDS_PER_DAY / self.seconds_per_day

    def sim_at(self, wall: float) -> dt.datetime:
        return self.anchor_sim + dt.timedelta(seconds=(wall - self.anchor_wall) * self.speed)

    def wall_at(self, sim: dt.datetime) -> float:
        return self.anchor_wall + (sim - self.anchor_sim).total_seconds() / self.speed


@dataclass
class DayPlan:
    """One simulated day: every batch it lands, spliced across scenario switches."""

    day: dt.date
    scenario: str | None
    batches: dict[str, pd.DataFrame]
    truth: pd.DataFrame | None = None
    # Where each switch happened, in order: (simulated time, scenario from then on).
    switches: list[tuple[dt.datetime, str | None]] = field(default_factory=list)

    def switch(
        self,
        at: dt.datetime,
        scenario: str | None,
        batches: dict[str, pd.DataFrame],
        truth: pd.DataFrame | None,
    ) -> None:
        """From `at` on, the day is the one simulated under `scenario` (`batches`, `truth`):
        rows before `at` stay as they were; ids of the new rows move up so none repeats."""
        offset = SWITCH_ID_OFFSET * (len(self.switches) + 1)
        cut = pd.Timestamp(at)
        moved_ids: np.ndarray | None = None
        main, moved_key = "", ""
        for name, new in batches.items():
            old = self.batches.get(name)
            time_column = TIME_COLUMNS.get(name)
            if time_column is None or old is None or time_column not in new:
                if old is None:
                    self.batches[name] = new
                continue  # entity snapshots: the day's first plan stands
            new = new.copy()
            for column in ID_COLUMNS.get(name, ()):
                if column in new:
                    new[column] = new[column] + offset
            kept_old = old[old[time_column] < cut] if time_column in old else old
            kept_new = new[new[time_column] >= cut]
            if name in MAIN_EVENTS.values():
                main, moved_key = name, ID_COLUMNS[name][0]
                moved_ids = kept_new[moved_key].to_numpy() - offset
            self.batches[name] = pd.concat([kept_old, kept_new], ignore_index=True)
        if truth is not None and self.truth is not None and moved_ids is not None:
            key = moved_key
            before = self.truth[self.truth[key].isin(self.batches[main][key])]
            after = truth[truth[key].isin(moved_ids)].copy()
            after[key] = after[key] + offset
            self.truth = pd.concat([before, after], ignore_index=True)
        self.switches.append((at, scenario))
        self.scenario = scenario


def sample_mask(
    n: int, rate_per_s: float, seconds_per_day: float, seed: int, day: dt.date
) -> np.ndarray:
    """Which of a day's `n` events are sent live at a mean of `rate_per_s` requests per wall
    second: each with the same chance, from a stream fixed by (seed, day), so a changed rate
    keeps the events already chosen and adds or drops others."""
    if n == 0 or rate_per_s <= 0:
        return np.zeros(n, dtype=bool)
    chance = min(1.0, rate_per_s * seconds_per_day / n)
    draws = np.random.default_rng([seed, 4242, day.toordinal()]).random(n)
    return draws < chance
