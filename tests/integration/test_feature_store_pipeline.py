"""The feature store on the real upstream: simulator, ingestion gate, offline store, features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import store, table_files, tables
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


def _as_of(table: pd.DataFrame, queries: pd.DataFrame, key: str) -> pd.DataFrame:
    """Each query's value as Feast reads it: the entity's latest row at or before its time."""

    def timed(frame: pd.DataFrame) -> pd.DataFrame:
        at = pd.to_datetime(frame["event_timestamp"], utc=True).dt.as_unit("us")
        return frame.assign(event_timestamp=at).sort_values("event_timestamp", kind="stable")

    ordered = timed(table)
    return pd.merge_asof(
        timed(queries),
        ordered,
        on="event_timestamp",
        by=key,
        direction="backward",
    ).sort_values([key, "event_timestamp"], kind="stable")


# Sparse entities over more than the widest look-back (30 d): many an entity's last event lies
# before the slice, and the 30-day windows reach past the slice's start.
SPARSE_WORLDS = {
    "fraud": {"n_cards": 400, "n_merchants": 40, "tx_per_card_per_day": 0.15},
    "recsys": {
        "n_users": 600,
        "n_items": 150,
        "new_users_per_day": 2,
        "new_items_per_day": 2,
        "sessions_per_user_per_day": 0.05,
    },
}


@pytest.mark.parametrize("world", ["fraud", "recsys"])
def test_a_landed_day_extends_the_tables_and_agrees_with_a_full_build(
    tmp_path: Path, world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The landing flow's build extends the windowed views past the previous clock from a
    look-back slice; at every instant either table changes, it answers what a build of the
    whole history answers, and the rows up to the previous clock are the old ones."""
    import datetime as dt

    import numpy as np
    import pyarrow.parquet as pq

    from features.catalog import ENTITIES, SENTINEL_TIME, VIEWS, views_of_world
    from pipeline.ingest import ingest
    from simulator import run_simulation

    settings = Settings(data_dir=tmp_path, simulator={world: SPARSE_WORLDS[world]})
    extendable = [v.name for v in views_of_world(world) if v.name in tables.LOOKBACK]
    run_simulation(settings, world, days=36, seed=3)
    ingest(settings)
    (previous,) = tables.build(settings, [world])
    # A few rows a batch, so each extension streams its old table in many, and twice, so the
    # second extends a table the first appended to (no longer sorted by entity).
    monkeypatch.setattr(table_files, "EXTEND_BATCH_ROWS", 50)
    for seed in (4, 5):
        old = {v: pq.read_table(table_files.table_path(settings, v)) for v in extendable}
        next_day = previous.as_of.date() + dt.timedelta(days=1)
        run_simulation(settings, world, days=1, seed=seed, start=next_day)
        clock = tables.CLOCK_EVENTS[world]
        # (A small world's one day may have no chargeback: that empty batch is quarantined.)
        assert clock in [b.event_type for b in ingest(settings).accepted]

        (second,) = tables.build(settings, [world], incremental=True)
        assert sorted(second.extended) == sorted(extendable) and not second.past_rewritten
        assert second.as_of.date() == next_day
        events = {n: tables.read_events(settings, world, n) for n in tables.EVENT_COLUMNS[world]}
        whole = tables.compute_world_tables(world, events, settings)
        boundary = pd.Timestamp(previous.as_of)
        for name in extendable:
            view, key = VIEWS[name], ENTITIES[VIEWS[name].entity].join_key
            path = table_files.table_path(settings, name)
            assert pq.ParquetFile(path).metadata.num_row_groups > 2, name  # streamed in batches
            extended = pq.read_table(path).to_pandas()
            truth = table_files.with_sentinels(whole[name], view)
            before = old[name].to_pandas()
            kept = extended[extended["event_timestamp"] <= boundary]
            # Up to the old clock, the old rows, and for an entity new today its sentinel only.
            new_entities = kept[~kept[key].isin(before[key])]
            assert (new_entities["event_timestamp"] == pd.Timestamp(SENTINEL_TIME)).all()
            pd.testing.assert_frame_equal(
                kept[kept[key].isin(before[key])].reset_index(drop=True),
                before[before["event_timestamp"] <= boundary].reset_index(drop=True),
            )
            assert (extended["event_timestamp"] > boundary).sum() > 30, name  # the day's rows
            queries = pd.concat([extended, truth])[[key, "event_timestamp"]].drop_duplicates()
            got, want = _as_of(extended, queries, key), _as_of(truth, queries, key)
            for column in (f.name for f in view.features):
                a, b = got[column].to_numpy(), want[column].to_numpy()
                if a.dtype.kind == "f" or b.dtype.kind == "f":
                    np.testing.assert_allclose(
                        a.astype(float), b.astype(float), rtol=1e-9, atol=1e-6, err_msg=column
                    )
                else:
                    assert (pd.Series(a).fillna(-1) == pd.Series(b).fillna(-1)).all(), column
        previous = second


def test_a_table_not_written_for_the_view_as_it_is_now_is_rebuilt_not_extended(
    tmp_path: Path,
) -> None:
    """An empty table (as `ensure_tables` makes one) or one written before the view changed is
    not extended: extending it would keep the gap, or fail to concatenate."""
    import datetime as dt

    import pyarrow.parquet as pq

    from pipeline.ingest import ingest
    from simulator import run_simulation

    settings = Settings(data_dir=tmp_path, simulator={"fraud": SPARSE_WORLDS["fraud"]})
    run_simulation(settings, "fraud", days=3, seed=3)
    ingest(settings)
    (first,) = tables.build(settings, ["fraud"])
    velocity, profile = (
        table_files.table_path(settings, v) for v in ("card_velocity", "card_profile")
    )
    pq.write_table(pq.read_table(velocity).schema.empty_table(), velocity)
    pq.write_table(pq.read_table(profile).drop(["card_home_country"]), profile)
    run_simulation(settings, "fraud", days=1, seed=4, start=first.as_of.date() + dt.timedelta(1))
    ingest(settings)
    (second,) = tables.build(settings, ["fraud"], incremental=True)
    assert second.extended == []
    old_day = pd.Timestamp(first.as_of) - pd.Timedelta(days=1)
    for path in (velocity, profile):
        rebuilt = pq.read_table(path).to_pandas()
        assert (rebuilt["event_timestamp"] < old_day).sum() > 0  # the old days are back
        assert "card_home_country" in pq.read_table(profile).schema.names
