"""A lab's data and models in two calls: the recipe the integration tests and the benchmarks
share (`mlsd demo` has its own: it simulates fewer days and lands a broken batch on purpose).

Only the tests and benchmarks import this; the pipeline, features and simulator are imported
inside the functions, so importing it costs nothing."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlsd.settings import WORLDS, Settings

if TYPE_CHECKING:
    from pipeline.ingest import IngestReport


@dataclass
class LabData:
    """What `build_data` did: the ingest report and the seconds each step took."""

    ingest: IngestReport
    seconds: dict[str, float] = field(default_factory=dict)


def build_data(settings: Settings, materialize: bool = True) -> LabData:
    """Simulate both worlds (settings.simulator: days, seed), ingest them, build the feature
    tables and apply the feature store; `materialize` then fills the online store."""
    from features import store, tables
    from pipeline.ingest import ingest
    from simulator import run_simulation

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for world in WORLDS:
        run_simulation(settings, world, days=settings.simulator.days, seed=settings.simulator.seed)
    seconds["simulate"] = time.perf_counter() - started
    started = time.perf_counter()
    report = ingest(settings)
    seconds["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    tables.build(settings)
    store.apply(settings)
    if materialize:
        store.materialize(settings)
    seconds["features"] = time.perf_counter() - started
    return LabData(report, seconds)


def train_versions(settings: Settings, tracking_uri: str) -> dict[str, list[dict[str, Any]]]:
    """Fraud twice (a first model as of three days before the data's end, then a retrain on all
    of it) and the recommender once, by their Prefect flows (a Prefect API must be reachable,
    or a `prefect_test_harness` open). The first version of each becomes @champion (the gate's
    rule when there is none); fraud's second gets whatever its gate decides. Returns each
    flow's outcome, in order, by product."""
    from features import tables
    from pipeline.train_fraud import train_fraud
    from pipeline.train_recsys import train_recsys

    clock = tables.world_clock(settings, "fraud")
    if clock is None:
        raise RuntimeError("no fraud data to train on: run build_data first")
    first = train_fraud(as_of=clock - dt.timedelta(days=3), seed=0, tracking_uri=tracking_uri)
    second = train_fraud(seed=1, tracking_uri=tracking_uri)
    recsys = train_recsys(seed=0, tracking_uri=tracking_uri)
    return {"fraud": [first, second], "recsys": [recsys]}
