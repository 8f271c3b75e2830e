"""The ingestion gate end to end on disk: clean batches are published, each defect is quarantined."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsd.settings import Settings
from pipeline import offline_store
from pipeline.contracts import CATEGORIES, CONTRACTS, COUNTRIES, GENRES
from pipeline.ingest import find_raw_batches, ingest, offline_partitions, read_offline

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 5)
ROWS = 40


def _us(values: Any) -> pd.Series:
    # pandas arithmetic with Timedelta drifts to nanoseconds; the contract says microseconds.
    return pd.Series(values).astype("datetime64[us, UTC]")


def _cycle(values: tuple[str, ...], n: int) -> list[str]:
    return [values[i % len(values)] for i in range(n)]


def valid_batch(event_type: str, day: dt.date = DAY, n: int = ROWS) -> pd.DataFrame:
    """A small batch of `event_type` for `day` that satisfies the contract."""
    start = pd.Timestamp(day, tz="UTC")
    within_day = _us(start + pd.to_timedelta(np.linspace(0, 86_399, n).astype(int), unit="s"))
    before_day = _us(start - pd.to_timedelta(np.arange(n) + 1, unit="D"))
    ids = np.arange(1, n + 1, dtype="int64") + day.toordinal() * 1_000
    if event_type == "transactions":
        return pd.DataFrame(
            {
                "transaction_id": ids,
                "event_timestamp": within_day,
                "card_id": [f"card_{i:06d}" for i in range(n)],
                "merchant_id": [f"m_{i % 7:05d}" for i in range(n)],
                "merchant_category": _cycle(CATEGORIES, n),
                "amount": np.linspace(5.0, 200.0, n),
                "country": _cycle(COUNTRIES, n),
                "device_id": [f"dev_{i}" for i in range(n)],
                "channel": _cycle(("pos", "online"), n),
            }
        )
    if event_type == "chargebacks":
        return pd.DataFrame(
            {
                "transaction_id": ids,
                "card_id": [f"card_{i:06d}" for i in range(n)],
                "merchant_id": [f"m_{i:05d}" for i in range(n)],
                "amount": np.linspace(1.0, 900.0, n),
                "transaction_timestamp": within_day,
                "reported_at": _us(within_day + pd.Timedelta(days=3)),
                "reason": ["fraud"] * n,
            }
        )
    if event_type == "cards":
        return pd.DataFrame(
            {
                "card_id": [f"card_{i:06d}" for i in range(n)],
                "home_country": _cycle(COUNTRIES, n),
                "issued_at": before_day,
            }
        )
    if event_type == "merchants":
        return pd.DataFrame(
            {
                "merchant_id": [f"m_{i:05d}" for i in range(n)],
                "merchant_category": _cycle(CATEGORIES, n),
                "country": _cycle(COUNTRIES, n),
                "onboarded_at": before_day,
            }
        )
    if event_type == "interactions":
        return pd.DataFrame(
            {
                "interaction_id": ids,
                "event_timestamp": within_day,
                "session_id": (np.arange(n, dtype="int64") // 10),
                "user_id": [f"u_{i // 10:06d}" for i in range(n)],
                "item_id": [f"i_{i:06d}" for i in range(n)],
                "position": np.arange(n, dtype="int64") % 10,
                "event": _cycle(("play", "skip"), n),
                "dwell_seconds": np.linspace(0.0, 3600.0, n),
            }
        )
    if event_type == "users":
        return pd.DataFrame(
            {
                "user_id": [f"u_{i:06d}" for i in range(n)],
                "country": _cycle(COUNTRIES, n),
                "signup_at": within_day,
            }
        )
    if event_type == "items":
        return pd.DataFrame(
            {
                "item_id": [f"i_{i:06d}" for i in range(n)],
                "genre": _cycle(GENRES, n),
                "released_at": within_day,
                "duration_seconds": np.linspace(30.0, 1200.0, n),
            }
        )
    raise ValueError(f"no builder for {event_type}")


WORLD_OF = {event_type: world for world, types in CONTRACTS.items() for event_type in types}


def raw_path(settings: Settings, event_type: str, day: dt.date = DAY) -> Path:
    return settings.raw_dir / WORLD_OF[event_type] / event_type / f"{day.isoformat()}.parquet"


def land(settings: Settings, event_type: str, frame: pd.DataFrame, day: dt.date = DAY) -> Path:
    """Write a batch into the landing zone the way a producer would."""
    path = raw_path(settings, event_type, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def quarantine_report(settings: Settings, event_type: str, day: dt.date = DAY) -> dict[str, Any]:
    path = settings.quarantine_dir / WORLD_OF[event_type] / event_type / f"{day}.validation.json"
    return json.loads(path.read_text())


def partition(settings: Settings, event_type: str, day: dt.date = DAY) -> Path:
    return offline_store.partition_path(settings.offline_dir, WORLD_OF[event_type], event_type, day)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "lab")


# ----------------------------------------------------------------------------- clean batches


def test_clean_batches_of_every_event_type_become_identical_partitions(settings: Settings) -> None:
    landed = {event_type: valid_batch(event_type) for event_type in WORLD_OF}
    for event_type, frame in landed.items():
        land(settings, event_type, frame)

    report = ingest(settings)

    assert report.summary() == {
        "batches": len(WORLD_OF),
        "accepted": len(WORLD_OF),
        "quarantined": 0,
        "rows_accepted": ROWS * len(WORLD_OF),
        "quarantined_batches": {},
    }
    for event_type, frame in landed.items():
        world = WORLD_OF[event_type]
        pd.testing.assert_frame_equal(pd.read_parquet(partition(settings, event_type)), frame)
        pd.testing.assert_frame_equal(read_offline(settings, world, event_type), frame)
        assert not raw_path(settings, event_type).exists()
        assert (settings.archive_dir / world / event_type / f"{DAY}.parquet").exists()
    assert files_under(settings.quarantine_dir) == []
    assert not any(p.name == "_staging" for p in settings.offline_dir.rglob("*"))


def test_read_offline_concatenates_days_in_order(settings: Settings) -> None:
    days = [DAY + dt.timedelta(days=d) for d in (2, 0, 11)]
    for day in days:
        land(settings, "interactions", valid_batch("interactions", day), day)

    ingest(settings, "recsys")

    expected = pd.concat(
        [valid_batch("interactions", day) for day in sorted(days)], ignore_index=True
    )
    pd.testing.assert_frame_equal(read_offline(settings, "recsys", "interactions"), expected)


def test_read_offline_without_partitions_is_an_empty_frame_with_the_contract_columns(
    settings: Settings,
) -> None:
    frame = read_offline(settings, "fraud", "chargebacks")
    contract = CONTRACTS["fraud"]["chargebacks"]
    assert frame.empty
    assert list(frame.columns) == contract.column_names
    assert str(frame["reported_at"].dtype) == "datetime64[us, UTC]"
    with pytest.raises(KeyError):
        read_offline(settings, "fraud", "refunds")


def test_string_columns_may_arrive_as_pandas_string_dtype(settings: Settings) -> None:
    frame = valid_batch("cards")
    land(settings, "cards", frame.astype({"card_id": "string", "home_country": "string"}))

    report = ingest(settings)

    assert report.summary()["accepted"] == 1
    pd.testing.assert_frame_equal(read_offline(settings, "fraud", "cards"), frame)


def test_types_are_judged_from_the_file_not_from_pandas_metadata(settings: Settings) -> None:
    frame = valid_batch("transactions")
    # Nullable Int64 / Float64 and a stored index all write plain int64 / float64 columns.
    producer_frame = frame.astype({"transaction_id": "Int64", "amount": "Float64"})
    land_with_index = producer_frame.set_axis(np.arange(ROWS) * 3)
    path = raw_path(settings, "transactions")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(land_with_index), path)

    report = ingest(settings)

    assert report.summary()["accepted"] == 1, report.summary()
    pd.testing.assert_frame_equal(read_offline(settings, "fraud", "transactions"), frame)


def test_batch_results_say_where_each_batch_went(settings: Settings) -> None:
    land(settings, "cards", valid_batch("cards"))
    land(settings, "merchants", valid_batch("merchants").assign(country="XX"))

    report = ingest(settings, "fraud")

    cards, merchants = report.batches
    assert (cards.world, cards.event_type, cards.day, cards.accepted) == (
        "fraud",
        "cards",
        DAY,
        True,
    )
    assert cards.location == partition(settings, "cards")
    assert offline_partitions(settings, "fraud", "cards") == [cards.location]
    assert (merchants.accepted, merchants.rows) == (False, ROWS)
    assert merchants.location == settings.quarantine_dir / "fraud" / "merchants" / f"{DAY}.parquet"
    assert report.rows_accepted == ROWS
    assert [f.describe() for f in merchants.failures] == [
        f"country must be one of {', '.join(COUNTRIES)}; {ROWS} of {ROWS} rows break it, "
        "e.g. 'XX', 'XX', 'XX', 'XX', 'XX'"
    ]


def test_reingesting_the_same_batch_replaces_its_partition(settings: Settings) -> None:
    frame = valid_batch("transactions")
    land(settings, "transactions", frame)
    ingest(settings)
    archived = settings.archive_dir / "fraud" / "transactions" / f"{DAY}.parquet"
    raw_path(settings, "transactions").write_bytes(archived.read_bytes())

    report = ingest(settings)

    assert [(b.batch_id, b.status) for b in report.batches] == [
        (f"fraud/transactions/{DAY}", "accepted")
    ]
    pd.testing.assert_frame_equal(read_offline(settings, "fraud", "transactions"), frame)
    assert files_under(settings.offline_dir) == [partition(settings, "transactions")]
    assert files_under(settings.archive_dir) == [archived]


def test_a_fixed_batch_that_lands_again_leaves_the_quarantine(settings: Settings) -> None:
    land(settings, "users", valid_batch("users").assign(country="XX"))
    assert ingest(settings).summary()["quarantined"] == 1
    land(settings, "users", valid_batch("users"))

    assert ingest(settings).summary()["accepted"] == 1

    assert files_under(settings.quarantine_dir) == []


def test_on_batch_reports_each_batch_as_it_is_done(settings: Settings) -> None:
    land(settings, "items", valid_batch("items"))
    land(settings, "users", valid_batch("users").iloc[0:0])
    seen: list[tuple[str, str]] = []

    ingest(settings, on_batch=lambda batch_id, status: seen.append((batch_id, status)))

    assert seen == [(f"recsys/items/{DAY}", "accepted"), (f"recsys/users/{DAY}", "quarantined")]


def test_ingesting_one_world_leaves_the_other_in_the_landing_zone(settings: Settings) -> None:
    land(settings, "cards", valid_batch("cards"))
    land(settings, "users", valid_batch("users"))

    report = ingest(settings, "recsys")

    assert [b.batch_id for b in report.batches] == [f"recsys/users/{DAY}"]
    assert raw_path(settings, "cards").exists()


def test_files_in_progress_are_not_batches(settings: Settings) -> None:
    path = land(settings, "cards", valid_batch("cards"))
    (path.parent / f".{path.name}").write_bytes(b"half")
    (path.parent / "_tmp.parquet").write_bytes(b"half")

    assert [b.batch_id for b in find_raw_batches(settings)] == [f"fraud/cards/{DAY}"]


# ----------------------------------------------------------------------------- defects

Defect = Callable[[pd.DataFrame], pd.DataFrame]


def _set(column: str, row: int, value: Any) -> Defect:
    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        broken = frame.copy()
        broken[column] = broken[column].astype(object) if value is None else broken[column]
        broken.loc[row, column] = value
        return broken

    return apply


def _next_day(column: str) -> Defect:
    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        broken = frame.copy()
        broken.loc[5, column] = frame.loc[5, column] + pd.Timedelta(days=1)
        broken[column] = _us(broken[column])
        return broken

    return apply


def _reported_before_transaction(frame: pd.DataFrame) -> pd.DataFrame:
    broken = frame.copy()
    broken.loc[[2, 9], "reported_at"] = frame.loc[[2, 9], "transaction_timestamp"] - pd.Timedelta(
        hours=1
    )
    broken["reported_at"] = _us(broken["reported_at"])
    return broken


# (event type, defect, expectation that must fail, column it must name, rows it must count)
DEFECTS: dict[str, tuple[str, Defect, str, str | None, int | None]] = {
    "null card_id": (
        "transactions",
        _set("card_id", 3, None),
        "expect_column_values_to_not_be_null",
        "card_id",
        1,
    ),
    "position out of range": (
        "interactions",
        _set("position", 4, 50),
        "expect_column_values_to_be_between",
        "position",
        1,
    ),
    "negative amount": (
        "chargebacks",
        _set("amount", 0, -3.0),
        "expect_column_values_to_be_between",
        "amount",
        1,
    ),
    "missing column": (
        "transactions",
        lambda f: f.drop(columns="device_id"),
        "expect_column_values_to_not_be_null",
        "device_id",
        None,
    ),
    "renamed column": (
        "transactions",
        lambda f: f.rename(columns={"amount": "amount_usd"}),
        "expect_table_columns_to_match_set",
        None,
        None,
    ),
    "amount as strings": (
        "transactions",
        lambda f: f.assign(amount=f["amount"].map(lambda v: f"{v:.2f}")),
        "expect_column_type_to_be",
        "amount",
        None,
    ),
    "timestamps as strings": (
        "interactions",
        lambda f: f.assign(event_timestamp=f["event_timestamp"].astype(str)),
        "expect_column_type_to_be",
        "event_timestamp",
        None,
    ),
    "timestamps without a time zone": (
        "transactions",
        lambda f: f.assign(event_timestamp=f["event_timestamp"].dt.tz_localize(None)),
        "expect_column_type_to_be",
        "event_timestamp",
        None,
    ),
    "ids as strings": (
        "interactions",
        lambda f: f.assign(session_id=f["session_id"].astype(str)),
        "expect_column_type_to_be",
        "session_id",
        None,
    ),
    "duplicate id": (
        "transactions",
        _set("transaction_id", 7, int(valid_batch("transactions")["transaction_id"][6])),
        "expect_column_values_to_be_unique",
        "transaction_id",
        2,
    ),
    "duplicate card": (
        "cards",
        _set("card_id", 1, "card_000000"),
        "expect_column_values_to_be_unique",
        "card_id",
        2,
    ),
    "empty batch": (
        "transactions",
        lambda f: f.iloc[0:0],
        "expect_table_row_count_to_be_between",
        None,
        None,
    ),
    "amount in cents": (
        "transactions",
        lambda f: f.assign(amount=f["amount"] * 100),
        "expect_column_median_to_be_between",
        "amount",
        None,
    ),
    "event outside the day": (
        "transactions",
        _next_day("event_timestamp"),
        "expect_column_values_to_be_between",
        "event_timestamp",
        1,
    ),
    "interaction outside the day": (
        "interactions",
        _next_day("event_timestamp"),
        "expect_column_values_to_be_between",
        "event_timestamp",
        1,
    ),
    "category not allowed": (
        "transactions",
        _set("merchant_category", 2, "casino"),
        "expect_column_values_to_be_in_set",
        "merchant_category",
        1,
    ),
    "genre not allowed": (
        "items",
        _set("genre", 2, "polka"),
        "expect_column_values_to_be_in_set",
        "genre",
        1,
    ),
    "malformed card id": (
        "transactions",
        _set("card_id", 2, "CARD-12"),
        "expect_column_values_to_match_regex",
        "card_id",
        1,
    ),
    "reported before the transaction": (
        "chargebacks",
        _reported_before_transaction,
        "expect_column_pair_values_a_to_be_greater_than_b",
        "reported_at",
        2,
    ),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_is_quarantined_naming_the_broken_rule(settings: Settings, defect: str) -> None:
    event_type, breaks, expectation_type, column, unexpected_count = DEFECTS[defect]
    world = WORLD_OF[event_type]
    landed = land(settings, event_type, breaks(valid_batch(event_type)))
    landed_bytes = landed.read_bytes()

    report = ingest(settings)

    assert [b.status for b in report.batches] == ["quarantined"]
    assert not landed.exists()
    moved = settings.quarantine_dir / world / event_type / f"{DAY}.parquet"
    assert moved.read_bytes() == landed_bytes
    assert files_under(settings.offline_dir) == []
    assert files_under(settings.archive_dir) == []

    document = quarantine_report(settings, event_type)
    assert document["batch_id"] == f"{world}/{event_type}/{DAY}"
    failed = [
        f
        for f in document["failed_expectations"]
        if f["expectation_type"] == expectation_type and f["column"] == column
    ]
    assert failed, document["failed_expectations"]
    assert all(f["reason"] for f in document["failed_expectations"])
    if unexpected_count is not None:
        assert failed[0]["unexpected_count"] == unexpected_count
    assert report.summary()["quarantined_batches"][document["batch_id"]]


def test_a_missing_column_is_reported_as_missing_not_as_a_gx_error(settings: Settings) -> None:
    land(settings, "transactions", valid_batch("transactions").drop(columns="device_id"))

    ingest(settings)

    failures = quarantine_report(settings, "transactions")["failed_expectations"]
    column_set = [
        f for f in failures if f["expectation_type"] == "expect_table_columns_to_match_set"
    ]
    assert column_set[0]["reason"].endswith("missing: device_id")
    on_device = [f for f in failures if f["column"] == "device_id"]
    assert on_device
    assert all(f["reason"].endswith("column 'device_id' is not in the batch") for f in on_device)


def test_a_renamed_column_is_reported_as_missing_and_unexpected(settings: Settings) -> None:
    land(
        settings,
        "transactions",
        valid_batch("transactions").rename(columns={"amount": "amount_usd"}),
    )

    ingest(settings)

    failures = quarantine_report(settings, "transactions")["failed_expectations"]
    column_set = [
        f for f in failures if f["expectation_type"] == "expect_table_columns_to_match_set"
    ]
    assert column_set[0]["reason"].endswith("missing: amount; unexpected: amount_usd")


def test_a_wrong_type_names_the_dtype_it_found(settings: Settings) -> None:
    frame = valid_batch("transactions")
    land(settings, "transactions", frame.assign(amount=frame["amount"].astype(str)))

    ingest(settings)

    failures = quarantine_report(settings, "transactions")["failed_expectations"]
    [type_failure] = [f for f in failures if f["expectation_type"] == "expect_column_type_to_be"]
    assert type_failure["observed_value"] == "object"
    assert type_failure["reason"] == "amount must have dtype float64; observed 'object'"


def test_validation_json_has_the_documented_fields(settings: Settings) -> None:
    land(settings, "transactions", valid_batch("transactions").assign(channel="atm"))

    ingest(settings)

    document = quarantine_report(settings, "transactions")
    assert set(document) == {
        "batch_id",
        "world",
        "event_type",
        "date",
        "validated_at",
        "source",
        "rows",
        "evaluated_expectations",
        "failed_expectations",
    }
    assert document["rows"] == ROWS
    assert document["source"] == f"raw/fraud/transactions/{DAY}.parquet"
    assert dt.datetime.fromisoformat(document["validated_at"]).tzinfo is not None
    [failure] = document["failed_expectations"]
    assert failure == {
        "expectation_type": "expect_column_values_to_be_in_set",
        "column": "channel",
        "reason": f"channel must be one of pos, online; {ROWS} of {ROWS} rows break it, "
        "e.g. 'atm', 'atm', 'atm', 'atm', 'atm'",
        "unexpected_count": ROWS,
        "observed_value": None,
        "examples": ["atm"] * 5,
    }


def test_an_unreadable_file_is_quarantined_with_the_reason(settings: Settings) -> None:
    path = raw_path(settings, "merchants")
    path.parent.mkdir(parents=True)
    path.write_text("merchant_id,country\nm_00001,US\n")

    report = ingest(settings)

    assert [b.status for b in report.batches] == ["quarantined"]
    [failure] = quarantine_report(settings, "merchants")["failed_expectations"]
    assert failure["expectation_type"] == "file_is_readable_parquet"
    assert failure["reason"].startswith("not a readable parquet file")
    assert (settings.quarantine_dir / "fraud" / "merchants" / f"{DAY}.parquet").exists()


def test_a_batch_without_a_contract_or_a_day_is_quarantined(settings: Settings) -> None:
    unknown = settings.raw_dir / "fraud" / "refunds" / f"{DAY}.parquet"
    undated = settings.raw_dir / "fraud" / "cards" / "latest.parquet"
    for path in (unknown, undated):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(valid_batch("cards")), path)

    report = ingest(settings)

    assert {b.batch_id: [f.expectation_type for f in b.failures] for b in report.batches} == {
        "fraud/cards/latest": ["batch_name_is_a_date"],
        f"fraud/refunds/{DAY}": ["event_type_has_contract"],
    }
    assert (settings.quarantine_dir / "fraud" / "cards" / "latest.validation.json").exists()


# ----------------------------------------------------------------------------- crashes


def test_a_crash_while_writing_leaves_no_partition_and_keeps_the_raw_batch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = valid_batch("transactions")
    landed = land(settings, "transactions", frame)

    def write_half_then_fail(table: pa.Table, where: Any, **_: Any) -> None:
        where.write(b"PAR1 half a row group")
        raise OSError("disk full")

    monkeypatch.setattr(offline_store.pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ingest(settings)

    assert landed.exists()
    assert not partition(settings, "transactions").parent.exists()
    assert files_under(settings.offline_dir) == []
    assert files_under(settings.archive_dir) == []
    assert files_under(settings.quarantine_dir) == []

    monkeypatch.undo()
    assert ingest(settings).summary()["accepted"] == 1
    pd.testing.assert_frame_equal(read_offline(settings, "fraud", "transactions"), frame)


def test_a_crash_while_writing_keeps_the_previous_partition(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = valid_batch("cards")
    land(settings, "cards", first)
    ingest(settings)
    land(settings, "cards", valid_batch("cards", n=ROWS + 5))

    def fail(*_: Any, **__: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(offline_store.pq, "write_table", fail)
    with pytest.raises(OSError):
        ingest(settings)

    pd.testing.assert_frame_equal(read_offline(settings, "fraud", "cards"), first)


def test_staging_files_left_by_a_killed_run_are_cleared_first(settings: Settings) -> None:
    staging = settings.offline_dir / "fraud" / "transactions" / "_staging"
    staging.mkdir(parents=True)
    leftover = staging / f"date={DAY}.dead.parquet"
    leftover.write_bytes(b"PAR1 half")

    report = ingest(settings)

    assert report.removed_staging_files == [leftover]
    assert not staging.exists()
    assert report.batches == []
