"""The feature store on the real upstream: simulator, ingestion gate, offline store, features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import store, tables
from mlsd.settings import Settings
from tests.support import skew

pytestmark = pytest.mark.integration


def test_simulated_and_ingested_world_builds_and_serves_consistently(tmp_path: Path) -> None:
    from pipeline.ingest import ingest
    from simulator import run_simulation

    settings = Settings(
        data_dir=tmp_path,
        simulator={
            "fraud": {"n_cards": 400, "n_merchants": 60},
            "recsys": {"n_users": 300, "n_items": 200},
        },
    )
    for world in ("fraud", "recsys"):
        run_simulation(settings, world, days=4, seed=5)
    report = ingest(settings)
    assert not report.quarantined, [b.batch_id for b in report.quarantined]

    built = {b.world: b for b in tables.build(settings)}
    assert all(b.as_of is not None and all(b.rows.values()) for b in built.values()), built
    store.apply(settings)
    store.materialize(settings)

    tx = tables.read_events(settings, "fraud", "transactions")
    clock = pd.Timestamp(built["fraud"].as_of)
    recent = tx.sort_values("event_timestamp").drop_duplicates("card_id", keep="last").tail(60)
    rows = recent[["card_id", "merchant_id", "amount", "country", "device_id"]].assign(
        event_timestamp=clock
    )
    fraud_report = skew.compare_offline_online(rows, "fraud_scoring", settings=settings)
    assert fraud_report.ok, fraud_report.mismatches[:10]

    interactions = tables.read_events(settings, "recsys", "interactions")
    recsys_clock = pd.Timestamp(built["recsys"].as_of)
    pairs = interactions.drop_duplicates("user_id", keep="last").tail(60)
    ranking = pairs[["user_id", "item_id"]].assign(event_timestamp=recsys_clock)
    ranking_report = skew.compare_offline_online(ranking, "recsys_ranking", settings=settings)
    assert ranking_report.ok, ranking_report.mismatches[:10]
