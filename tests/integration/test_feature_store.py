"""The feature store for real: point-in-time correctness and training-serving consistency.

Feast registry, parquet offline store, SQLite and a real Redis as online stores.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import feast_config, store, tables
from features.catalog import SERVICES
from features.embeddings import read_embeddings, write_embeddings
from features.store import MissingRequestDataError, online_features, training_frame
from mlsd.settings import Settings
from pipeline.fraud_training_set import features_as_served
from tests.support import sample_world, skew
from tests.support.system_services import service_missing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
US = pd.Timedelta(microseconds=1)
FRAUD_VIEWS = list(SERVICES["fraud_scoring"].views)
RANKING_VIEWS = list(SERVICES["recsys_ranking"].views)


# --- labs -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server is not installed (Debian package redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


def new_lab(root: Path, *, redis_port: int | None = None) -> tuple[Settings, dict]:
    """A seeded world in the offline store, its feature tables built and applied."""
    if redis_port is None:
        settings = Settings(data_dir=root)
    else:
        settings = Settings(
            data_dir=root, profile="scale", features={"redis": {"port": redis_port}}
        )
    events = sample_world.write_sample_world(settings)
    tables.build(settings)
    store.apply(settings)
    return settings, events


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def fresh_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, dict]:
    """Nothing materialised yet: the consistency test moves the online store forward itself."""
    port = request.getfixturevalue("redis_port") if request.param == "redis" else None
    settings, events = new_lab(tmp_path_factory.mktemp(f"lab-{request.param}"), redis_port=port)
    assert store.online_store_type(settings) == request.param
    return settings, events


@pytest.fixture(scope="module")
def served_lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    """SQLite lab materialised up to each world's clock, as `mlsd features materialize` leaves it."""
    settings, events = new_lab(tmp_path_factory.mktemp("served"))
    store.materialize(settings)
    return settings, events


# --- training-serving consistency -----------------------------------------------------------


def fraud_rows(events: dict, t: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Entity rows at t: busy and quiet cards, known and new devices, home and abroad, plus a
    card and a merchant the store has never seen."""
    tx = events["fraud"]["transactions"]
    past = tx[tx["event_timestamp"] < t]
    cards = pd.unique(
        np.concatenate([["card_000000", "card_000001"], past["card_id"].to_numpy()[::-1]])
    )
    merchants = pd.unique(past["merchant_id"].to_numpy()[::-1])
    home = events["fraud"]["cards"].set_index("card_id")["home_country"]
    rows = []
    for i, card in enumerate(cards):
        seen = past.loc[past["card_id"] == card, "device_id"]
        rows.append(
            {
                "card_id": card,
                "merchant_id": merchants[i % len(merchants)] if len(merchants) else "m_00000",
                "amount": float(rng.integers(1, 2_000)) + 0.25,
                "country": home.get(card, "US") if i % 3 else "NG",
                "device_id": seen.iloc[-1] if (i % 2 and not seen.empty) else f"dev_new_{i}",
            }
        )
    # Unknown card and merchant, early, so the Feast-engine subset (the head) has them too.
    rows.insert(
        2,
        {
            "card_id": "card_999999",
            "merchant_id": "m_99999",
            "amount": 42.0,
            "country": "US",
            "device_id": "d",
        },
    )
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = t
    return frame


def ranking_rows(events: dict, t: pd.Timestamp) -> pd.DataFrame:
    interactions = events["recsys"]["interactions"]
    past = interactions[interactions["event_timestamp"] < t]
    users = pd.unique(past["user_id"].to_numpy()[::-1])[:8]
    items = events["recsys"]["items"]
    # Popular items, the newest item (maybe not yet released at t), and ones nobody knows.
    candidates = [
        *pd.unique(past["item_id"].to_numpy()[::-1])[:4],
        items.sort_values("released_at")["item_id"].iloc[-1],
    ]
    rows = [{"user_id": u, "item_id": candidates[i % len(candidates)]} for i, u in enumerate(users)]
    rows += [
        {"user_id": "u_999999", "item_id": candidates[0]},
        {"user_id": users[0], "item_id": "i_999999"},
    ]
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = t
    return frame


def fraud_checkpoints(events: dict) -> list[pd.Timestamp]:
    """Instants on every kind of edge, ascending: exactly at a transaction (it must not count
    towards itself), exactly at a feature row (s + 1 µs), exactly as a 1 h window empties,
    exactly at a merchant-risk snapshot (midnight), and an arbitrary instant."""
    tx = events["fraud"]["transactions"]["event_timestamp"].sort_values().reset_index(drop=True)
    a, b = tx.iloc[len(tx) // 5], tx.iloc[2 * len(tx) // 5]
    midnight = tx.iloc[3 * len(tx) // 5].ceil("D")
    return [
        a,
        b + US,
        b + pd.Timedelta(hours=1) + US,
        midnight,
        midnight + pd.Timedelta(hours=7, seconds=13),
    ]


def ranking_checkpoints(events: dict) -> list[pd.Timestamp]:
    interactions = (
        events["recsys"]["interactions"]["event_timestamp"].sort_values().reset_index(drop=True)
    )
    released = events["recsys"]["items"]["released_at"]
    first = interactions.iloc[len(interactions) // 4]
    during = released[(released > first) & (released < interactions.iloc[-1])].sort_values()
    checkpoints = [first, first.ceil("D")]
    if not during.empty:
        checkpoints.append(during.iloc[0])  # exactly at a release
    checkpoints.append(interactions.iloc[-100] + pd.Timedelta(minutes=17))
    return sorted(set(checkpoints))


def assert_consistent(report: skew.SkewReport) -> None:
    assert report.rows > 0 and report.values_compared > 0
    shown = "\n".join(
        f"  row {m.row} {m.feature}: offline {m.offline!r} != online {m.online!r}"
        for m in report.mismatches[:20]
    )
    assert report.ok, (
        f"{len(report.mismatches)} of {report.values_compared} values differ:\n{shown}"
    )


def test_training_serving_consistency(fresh_lab: tuple[Settings, dict]) -> None:
    """For sampled (entity, t): the point-in-time join (both engines) equals what the online
    store serves after materialising up to t, every feature, on-demand ones and unknown markers
    included, value and type."""
    settings, events = fresh_lab
    rng = np.random.default_rng(11)
    # Feast's own join is slow per call and independent of the online backend: check it on a
    # subset, once (SQLite run); the merge_asof engine on every row, on both backends.
    feast_rows = 14 if store.online_store_type(settings) == "sqlite" else 0
    seen, compared = [], 0
    for t in fraud_checkpoints(events):
        reports = store.materialize(settings, end=t.to_pydatetime(), views=FRAUD_VIEWS)
        assert not [r for r in reports if r.skipped], reports
        rows = fraud_rows(events, t, rng)
        report = skew.compare_offline_online(rows, "fraud_scoring", settings=settings)
        assert_consistent(report)
        compared += report.values_compared
        if feast_rows:
            assert_consistent(
                skew.compare_offline_online(
                    rows.head(feast_rows), "fraud_scoring", settings=settings, engine="feast"
                )
            )
        seen.append(training_frame(rows, "fraud_scoring", settings=settings))
        if t == t.floor("D"):
            # The daily landing has delivered the days before t, no more: a payment later that
            # day is served these features, and training reads them so (features_as_served).
            later = fraud_rows(events, t + pd.Timedelta(hours=15, minutes=4), rng)
            as_served = features_as_served(later, "day_start")
            assert (as_served["event_timestamp"] == t).all()
            assert_consistent(
                skew.compare_offline_online(as_served, "fraud_scoring", settings=settings)
            )
            # Read at the payment instead, they differ: the lag is real in this world.
            at_payment = training_frame(later, "fraud_scoring", settings=settings)
            lagged = training_frame(as_served, "fraud_scoring", settings=settings)
            assert (at_payment["seconds_since_last_tx"] != lagged["seconds_since_last_tx"]).any()
            # The request's own clock stays at the payment: it is 15:04 there, not midnight.
            assert (lagged["hour_of_day"] == 15).all()
    for t in ranking_checkpoints(events):
        reports = store.materialize(settings, end=t.to_pydatetime(), views=RANKING_VIEWS)
        assert not [r for r in reports if r.skipped], reports
        rows = ranking_rows(events, t)
        report = skew.compare_offline_online(rows, "recsys_ranking", settings=settings)
        assert_consistent(report)
        compared += report.values_compared
        if feast_rows:
            assert_consistent(
                skew.compare_offline_online(
                    rows, "recsys_ranking", settings=settings, engine="feast"
                )
            )
    assert compared > 5_000
    if store.online_store_type(settings) == "redis":
        import redis

        port = settings.features.redis.port
        assert redis.Redis(host="127.0.0.1", port=port).dbsize() > 0  # served from Redis, for real

    # The samples must exercise what they claim to, or agreement proves little.
    frames = pd.concat(seen)
    assert frames["card_unknown"].any() and not frames["card_unknown"].all()
    assert (frames["card_tx_count_1h"] > 0).any() and (frames["card_tx_count_24h"] == 0).any()
    assert set(frames["is_new_device"]) == {0, 1} and set(frames["is_foreign_country"]) == {0, 1}
    assert (frames["merchant_chargeback_count_30d"] > 0).any()
    assert (frames["seconds_since_last_tx"] > 0).any()


def test_embeddings_written_back_are_served_and_joined(fresh_lab: tuple[Settings, dict]) -> None:
    settings, events = fresh_lab
    users = events["recsys"]["users"]["user_id"].head(10)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(users), 8)).astype(np.float32)
    trained_at = pd.Timestamp("2026-01-04 12:00", tz="UTC")
    result = write_embeddings(
        settings,
        "user",
        pd.DataFrame({"user_id": users, "vector": list(vectors)}),
        version="retrieval-v1",
        event_timestamp=trained_at.to_pydatetime(),
    )
    assert (result.rows, result.dimension) == (10, 8)

    served = online_features(
        {"user_id": users.iloc[3]}, None, "recsys_retrieval_user", settings=settings
    )
    assert (
        served["user_vector"] == vectors[3].tolist()
        and served["user_embedding_version"] == "retrieval-v1"
    )
    assert served["user_unknown"] is False
    stranger = online_features(
        {"user_id": "u_999999"}, None, "recsys_retrieval_user", settings=settings
    )
    assert stranger == {"user_vector": [], "user_embedding_version": "", "user_unknown": True}

    rows = pd.DataFrame({"user_id": [*users, "u_999999"], "event_timestamp": trained_at})
    assert_consistent(skew.compare_offline_online(rows, "recsys_retrieval_user", settings=settings))
    before = training_frame(
        rows.assign(event_timestamp=trained_at - US), "recsys_retrieval_user", settings=settings
    )
    assert before["user_unknown"].all()  # vectors trained at t are not known just before t
    assert len(read_embeddings(settings, "user")) == 10


# --- point in time ---------------------------------------------------------------------------


def _append_partition(
    settings: Settings, world: str, event_type: str, day: dt.date, rows: pd.DataFrame
) -> None:
    path = settings.offline_dir / world / event_type / f"date={day.isoformat()}" / "part-0.parquet"
    frame = (
        pd.concat([pq.read_table(path).to_pandas(), rows], ignore_index=True)
        if path.exists()
        else rows
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def test_future_events_and_labels_do_not_move_the_training_frame(tmp_path: Path) -> None:
    settings, events = new_lab(tmp_path)
    tx = events["fraud"]["transactions"]
    t = tx["event_timestamp"].iloc[len(tx) // 2]
    sample = tx[tx["event_timestamp"] <= t].tail(150)
    rows = sample[["card_id", "merchant_id", "event_timestamp", "amount", "country", "device_id"]]
    interactions = events["recsys"]["interactions"]
    ranking = interactions[interactions["event_timestamp"] <= t].tail(150)[
        ["user_id", "item_id", "event_timestamp"]
    ]
    before = training_frame(rows, "fraud_scoring", settings=settings)
    ranking_before = training_frame(ranking, "recsys_ranking", settings=settings)

    # After t: more spending on the same cards and merchants, labels for transactions before t
    # that are only reported after t, more listening, and an item released after t.
    later = sample.tail(40).copy()
    later["transaction_id"] += 1_000_000
    later["event_timestamp"] = t + pd.to_timedelta(np.arange(1, 41), unit="s")
    _append_partition(
        settings,
        "fraud",
        "transactions",
        t.date(),
        later[later["event_timestamp"].dt.date == t.date()],
    )
    _append_partition(
        settings,
        "fraud",
        "transactions",
        t.date() + dt.timedelta(days=1),
        later[later["event_timestamp"].dt.date != t.date()],
    )
    labelled = sample.head(30)
    late_labels = pd.DataFrame(
        {
            "transaction_id": labelled["transaction_id"].to_numpy() + 2_000_000,
            "card_id": labelled["card_id"].to_numpy(),
            "merchant_id": labelled["merchant_id"].to_numpy(),
            "amount": labelled["amount"].to_numpy(),
            "transaction_timestamp": labelled["event_timestamp"].to_numpy(),
            "reported_at": t + pd.Timedelta(milliseconds=1),
            "reason": "fraud",
        }
    )
    late_labels["transaction_timestamp"] = pd.to_datetime(
        late_labels["transaction_timestamp"], utc=True
    )
    for day, part in late_labels.groupby(late_labels["transaction_timestamp"].dt.date):
        _append_partition(settings, "fraud", "chargebacks", day, part)
    more_listening = ranking.tail(50).assign(
        event_timestamp=t + pd.Timedelta(seconds=5), event="play"
    )
    more_listening["interaction_id"] = np.arange(5_000_000, 5_000_050)
    for column in ("session_id", "position"):
        more_listening[column] = 1
    more_listening["dwell_seconds"] = 1.0
    _append_partition(settings, "recsys", "interactions", t.date(), more_listening)
    rebuilt = {b.world: b for b in tables.build(settings)}
    # Events were added before the previous build's clock: the build says so.
    assert rebuilt["fraud"].past_rewritten and rebuilt["recsys"].past_rewritten

    pd.testing.assert_frame_equal(training_frame(rows, "fraud_scoring", settings=settings), before)
    pd.testing.assert_frame_equal(
        training_frame(ranking, "recsys_ranking", settings=settings), ranking_before
    )
    assert not training_frame(
        rows.assign(event_timestamp=t + pd.Timedelta(days=2)), "fraud_scoring", settings=settings
    ).equals(before.assign(event_timestamp=t + pd.Timedelta(days=2)))

    # The same events one microsecond before t do move it: the test can fail.
    earlier = later.assign(
        event_timestamp=t - US, transaction_id=later["transaction_id"] + 1_000_000
    )
    _append_partition(settings, "fraud", "transactions", t.date(), earlier)
    tables.build(settings)
    moved = training_frame(rows, "fraud_scoring", settings=settings)
    assert not moved.equals(before)


# --- the rest of the contract, on a served lab -------------------------------------------------


def test_engines_agree_on_a_larger_frame(
    served_lab: tuple[Settings, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """merge_asof and Feast's get_historical_features, on rows that stress the join: repeated
    (card, instant) with different requests, instants before any data, unknown entities. The
    asof engine's on-demand transformation goes a few rows at a time, as on a large frame."""
    from features import offline_join

    monkeypatch.setattr(offline_join, "ON_DEMAND_BATCH_ROWS", 7)
    settings, events = served_lab
    tx = events["fraud"]["transactions"].sample(250, random_state=5)
    rows = tx[
        ["card_id", "merchant_id", "event_timestamp", "amount", "country", "device_id"]
    ].copy()
    twins = rows.head(20).assign(amount=rows.head(20)["amount"] * 3, device_id="other")
    early = rows.head(5).assign(event_timestamp=pd.Timestamp("2020-01-01", tz="UTC"))
    strangers = rows.head(5).assign(card_id="card_777777", merchant_id="m_77777")
    rows = pd.concat([rows, twins, early, strangers], ignore_index=True)
    asof = training_frame(rows, "fraud_scoring", settings=settings, engine="asof")
    feast = training_frame(rows, "fraud_scoring", settings=settings, engine="feast")
    pd.testing.assert_frame_equal(asof, feast)
    assert len(asof) == len(rows) and asof["card_unknown"].sum() >= 10

    listening = events["recsys"]["interactions"].sample(200, random_state=6)[
        ["user_id", "item_id", "event_timestamp"]
    ]
    pd.testing.assert_frame_equal(
        training_frame(listening, "recsys_ranking", settings=settings, engine="asof"),
        training_frame(listening, "recsys_ranking", settings=settings, engine="feast"),
    )


def test_unknown_entities_get_defaults_and_a_marker(served_lab: tuple[Settings, dict]) -> None:
    settings, _ = served_lab
    served = online_features(
        {"card_id": "card_new", "merchant_id": "m_new"},
        {
            "amount": 99.0,
            "country": "US",
            "device_id": "d1",
            "event_timestamp": "2026-01-06T10:00:00Z",
        },
        "fraud_scoring",
        settings=settings,
    )
    assert served["card_unknown"] is True and served["merchant_unknown"] is True
    assert served["card_tx_count_24h"] == 0 and served["merchant_chargeback_rate_30d"] == 0.0
    assert (
        served["amount_over_card_mean"] == -1.0
        and served["is_new_device"] == 1
        and served["hour_of_day"] == 10
    )
    assert None not in served.values()
    ranked = store.online_features_many(
        [{"user_id": "u_new", "item_id": "i_new"}, {"user_id": "u_000001", "item_id": "i_000001"}],
        {"event_timestamp": "2026-01-06T10:00:00Z"},
        "recsys_ranking",
        settings=settings,
    )
    assert (
        ranked[0]["user_unknown"]
        and ranked[0]["item_unknown"]
        and ranked[0]["item_genre_index"] == -1
    )
    assert not ranked[1]["user_unknown"] and not ranked[1]["item_unknown"]
    frame = training_frame(
        pd.DataFrame(
            {
                "user_id": ["u_new"],
                "item_id": ["i_new"],
                "event_timestamp": [pd.Timestamp("2026-01-03", tz="UTC")],
            }
        ),
        "recsys_ranking",
        settings=settings,
    )
    assert (
        frame.loc[0, "user_unknown"]
        and frame.loc[0, "user_plays_7d"] == 0
        and frame["user_plays_7d"].dtype == "int64"
    )


def test_a_missing_request_field_is_named(served_lab: tuple[Settings, dict]) -> None:
    settings, _ = served_lab
    with pytest.raises(MissingRequestDataError, match="'amount'") as err:
        online_features(
            {"card_id": "card_000001", "merchant_id": "m_00001"},
            {"country": "US", "device_id": "d"},
            "fraud_scoring",
            settings=settings,
        )
    assert err.value.fields == ("amount",)
    rows = pd.DataFrame(
        {
            "card_id": ["card_000001"],
            "merchant_id": ["m_00001"],
            "event_timestamp": [pd.Timestamp("2026-01-03", tz="UTC")],
        }
    )
    with pytest.raises(MissingRequestDataError) as err:
        training_frame(rows, "fraud_scoring", settings=settings)
    assert err.value.fields == ("amount", "country", "device_id")


def test_the_online_store_is_in_wal_once_a_process_opens_it(
    served_lab: tuple[Settings, dict], tmp_path: Path
) -> None:
    """A materialisation must not lock the model servers' reads out (feast_config.
    online_store_in_wal, done as a process opens its store): the lab's store is in WAL, and a
    store Feast alone left in SQLite's default mode is put in WAL by the next process to open it."""
    import contextlib
    import sqlite3

    from features.feast_config import sqlite_online_path
    from features.session import get_store

    def mode(path: Path) -> str:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    settings, _ = served_lab
    assert mode(sqlite_online_path(settings)) == "wal"

    other = Settings(data_dir=tmp_path / "other", features={"online_store": "sqlite"})
    path = sqlite_online_path(other)
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")  # as Feast alone leaves a new store
    assert mode(path) == "delete"
    get_store(other)
    assert mode(path) == "wal"


def test_materialize_is_incremental(served_lab: tuple[Settings, dict]) -> None:
    settings, _ = served_lab
    seen: list[str] = []
    again = store.materialize(
        settings, views=FRAUD_VIEWS, on_view=lambda name, i, n: seen.append(name)
    )
    assert seen == FRAUD_VIEWS
    assert {r.skipped for r in again} == {"up to date"}
    clock = tables.world_clock(settings, "fraud")
    assert clock is not None
    later = store.materialize(settings, end=clock + dt.timedelta(days=40), views=["card_velocity"])
    assert (
        later[0].start == clock and later[0].rows_scanned > 0
    )  # the leave-window rows after the clock


def test_cli_builds_applies_materializes_and_feast_cli_reads_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlsd.commands import features as features_cmd

    data_dir, repo_dir = tmp_path / "lab", tmp_path / "repo"
    monkeypatch.setenv("MLSD_DATA_DIR", str(data_dir))
    # write_repo_files reads the directory where it is defined, not through the facade.
    monkeypatch.setattr(feast_config, "FEAST_REPO_DIR", repo_dir)
    sample_world.write_sample_world(Settings(data_dir=data_dir))
    runner = CliRunner()
    for args in (["build"], ["apply"], ["materialize"]):
        result = runner.invoke(features_cmd.app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "card_velocity" in result.output and "rows/s" in result.output
    assert (repo_dir / "feature_store.yaml").exists()

    shutil.copy(ROOT / "features" / "repo" / "repo.py", repo_dir / "repo.py")
    feast = Path(sys.executable).with_name("feast")
    plan = subprocess.run(
        [str(feast), "plan"], cwd=repo_dir, capture_output=True, text=True, timeout=180
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert (
        "fraud_scoring" in plan.stdout
        or "No changes" in plan.stdout
        or "card_velocity" in plan.stdout
    )


def test_online_lookups_from_many_threads_agree(served_lab: tuple[Settings, dict]) -> None:
    """Serving calls the facade from a thread pool: one cached store, answers unchanged."""
    from concurrent.futures import ThreadPoolExecutor

    settings, events = served_lab
    tx = events["fraud"]["transactions"].sample(200, random_state=9)
    calls = [
        (
            {"card_id": r.card_id, "merchant_id": r.merchant_id},
            {
                "amount": r.amount,
                "country": r.country,
                "device_id": r.device_id,
                "event_epoch_s": 1.8e9,
            },
        )
        for r in tx.itertuples()
    ]
    sequential = [online_features(e, q, "fraud_scoring", settings=settings) for e, q in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(
            pool.map(lambda c: online_features(*c, "fraud_scoring", settings=settings), calls)
        )
    assert threaded == sequential


def test_a_slate_read_per_entity_equals_row_by_row_reads(served_lab: tuple[Settings, dict]) -> None:
    """Many rows are read once per distinct key of each entity (and item rows from a cache):
    every row equals what a lookup of that row alone serves."""
    settings, events = served_lab
    plays = events["recsys"]["interactions"]
    users = [*plays["user_id"].drop_duplicates().head(3), "u_new"]
    items = [*plays["item_id"].drop_duplicates().head(40), "i_new"]
    slate = [{"user_id": u, "item_id": i} for u in users for i in items]
    request = {"event_epoch_s": 1.8e9}
    one_by_one = [
        store.online_features_many([row], request, "recsys_ranking", settings=settings)[0]
        for row in slate
    ]
    assert store.online_features_many(slate, request, "recsys_ranking", settings=settings) == (
        one_by_one
    )
    cache = store.OnlineFeatureCache(["item_stats"], ttl_s=60.0)
    first = store.online_features_many(
        slate, request, "recsys_ranking", settings=settings, cache=cache
    )
    again = store.online_features_many(
        slate, request, "recsys_ranking", settings=settings, cache=cache
    )
    assert first == again == one_by_one
    assert cache.misses == len(items) and cache.hits == len(items)  # second slate: all hits
    # The rows differ where they should: the comparison is not between defaults.
    assert len({row["user_plays_30d"] for row in one_by_one}) > 1
    assert len({row["item_plays_7d"] for row in one_by_one}) > 1
    fraud = events["fraud"]["transactions"].sample(50, random_state=3)
    entities = [{"card_id": r.card_id, "merchant_id": r.merchant_id} for r in fraud.itertuples()]
    requests = [
        {"amount": r.amount, "country": r.country, "device_id": r.device_id, "event_epoch_s": 1.8e9}
        for r in fraud.itertuples()
    ]
    assert store.online_features_many(entities, requests, "fraud_scoring", settings=settings) == [
        online_features(e, q, "fraud_scoring", settings=settings)
        for e, q in zip(entities, requests, strict=True)
    ]
