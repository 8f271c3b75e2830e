"""Run a world over a range of days and land its raw batches where the platform picks them up."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlsd.settings import Settings
from simulator import fraud, recsys
from simulator.common import DayOutput
from simulator.scenarios import DefectKind, Scenario, get_scenario


def iter_days(
    settings: Settings,
    world: str,
    *,
    days: int,
    seed: int,
    start: dt.date | None = None,
    scenario: str | None = None,
) -> Iterator[tuple[dt.date, DayOutput]]:
    """Yield (day, output) for each simulated day; entity snapshots come with the world's first day."""
    sim = settings.simulator
    epoch = sim.start_date
    start = start or epoch
    if start < epoch:
        raise ValueError(
            f"start {start} is before the world's first day {epoch} (simulator.start_date)"
        )
    chosen = get_scenario(scenario, world)
    last = start + dt.timedelta(days=days - 1)
    if world == "fraud":
        fpop = fraud.build_population(sim.fraud, seed, epoch)
        for i in range(days):
            day = start + dt.timedelta(days=i)
            out = fraud.simulate_day(fpop, sim.fraud, chosen.fraud, seed, day)
            batches = dict(out.batches)
            if chosen.fraud.defects:
                kind = chosen.fraud.defects[i % len(chosen.fraud.defects)]
                batches["transactions"] = break_schema(batches["transactions"], kind)
            if day == epoch:
                batches.update(fraud.entity_snapshots(fpop))
            yield day, DayOutput(batches, out.truth)
    elif world == "recsys":
        rpop = recsys.build_population(sim.recsys, seed, epoch, last, chosen.recsys, start)
        for i in range(days):
            day = start + dt.timedelta(days=i)
            yield day, recsys.simulate_day(rpop, sim.recsys, chosen.recsys, seed, day)
    else:
        raise ValueError(f"unknown world {world!r}; known: fraud, recsys")


def break_schema(transactions: pd.DataFrame, kind: DefectKind) -> pd.DataFrame:
    """An upstream defect of the kind a real feed suffers after a careless release."""
    broken = transactions.copy()
    if kind == "renamed-column":
        return broken.rename(columns={"amount": "amount_usd"})
    if kind == "nulls":
        rows = np.arange(len(broken)) % 50 == 0
        broken.loc[rows, "card_id"] = None
        broken.loc[rows, "device_id"] = None
        return broken
    if kind == "unit-change":
        broken["amount"] = (broken["amount"] * 100).round(0)
        return broken
    raise ValueError(f"unknown defect {kind!r}")


def simulate_frames(
    settings: Settings,
    world: str,
    *,
    days: int,
    seed: int,
    start: dt.date | None = None,
    scenario: str | None = None,
) -> dict[str, pd.DataFrame]:
    """All days concatenated per event type (plus `truth`), in memory: for tests and notebooks."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for _, out in iter_days(settings, world, days=days, seed=seed, start=start, scenario=scenario):
        for name, frame in out.batches.items():
            parts.setdefault(name, []).append(frame)
        if out.truth is not None:
            parts.setdefault("truth", []).append(out.truth)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


@dataclass
class SimulationSummary:
    """What a simulation run landed."""

    world: str
    scenario: Scenario
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    rows: dict[str, int] = field(default_factory=dict)
    batches: list[Path] = field(default_factory=list)
    fraud_rate: float | None = None  # true fraud rate (including never-reported frauds)


def land_batch(frame: pd.DataFrame, path: Path) -> None:
    """Write one batch so the platform never sees half a file: temp name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def run_simulation(
    settings: Settings,
    world: str,
    *,
    days: int,
    seed: int,
    start: dt.date | None = None,
    scenario: str | None = None,
    on_day: Callable[[dt.date], None] | None = None,
) -> SimulationSummary:
    """Simulate `days` days of `world` and land every batch in the landing zone.

    The truth the platform never sees (which transactions really were fraud) is kept beside,
    under <data_dir>/simulator/truth, for evaluating what the platform caught.
    """
    summary = SimulationSummary(world, get_scenario(scenario, world))
    frauds = total = 0
    for day, out in iter_days(
        settings, world, days=days, seed=seed, start=start, scenario=scenario
    ):
        summary.first_day = summary.first_day or day
        summary.last_day = day
        for event_type, frame in out.batches.items():
            path = settings.raw_dir / world / event_type / f"{day.isoformat()}.parquet"
            land_batch(frame, path)
            summary.batches.append(path)
            summary.rows[event_type] = summary.rows.get(event_type, 0) + len(frame)
        if out.truth is not None:
            land_batch(
                out.truth,
                settings.data_dir / "simulator" / "truth" / world / f"{day.isoformat()}.parquet",
            )
            if "is_fraud" in out.truth:
                frauds += int(out.truth["is_fraud"].sum())
                total += len(out.truth)
        if on_day:
            on_day(day)
    if world == "fraud" and total:
        summary.fraud_rate = frauds / total
    return summary
