"""The offline store: validated events as one parquet partition per event type and day.

Layout: ``offline/<world>/<event_type>/date=<YYYY-MM-DD>/part-0.parquet``. A partition appears
whole or not at all: it is written under ``_staging/`` (which pyarrow datasets skip, as they skip
every ``_``-prefixed path), synced, and renamed into place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mlsd.settings import Settings
from pipeline.contracts import contract_for

STAGING_DIR_NAME = "_staging"
PARTITION_FILE_NAME = "part-0.parquet"


def event_type_dir(offline_dir: Path, world: str, event_type: str) -> Path:
    return offline_dir / world / event_type


def partition_path(offline_dir: Path, world: str, event_type: str, day: dt.date) -> Path:
    """Where the partition of one event type and day lives."""
    return (
        event_type_dir(offline_dir, world, event_type)
        / f"date={day.isoformat()}"
        / PARTITION_FILE_NAME
    )


def write_partition(
    offline_dir: Path, world: str, event_type: str, day: dt.date, table: pa.Table
) -> Path:
    """Write `table` as the partition of `day`, replacing any earlier one, atomically.

    Readers see the old partition or the new one, never a half-written file; if the write fails,
    neither a partition nor a staging file is left behind.
    """
    final = partition_path(offline_dir, world, event_type, day)
    staging_dir = event_type_dir(offline_dir, world, event_type) / STAGING_DIR_NAME
    staging_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir / f"date={day.isoformat()}.{uuid.uuid4().hex}.parquet"
    try:
        with staging.open("wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        _fsync_dir(final.parent)
    finally:
        staging.unlink(missing_ok=True)
        # Another writer may still be staging beside us; its file keeps the folder alive.
        with contextlib.suppress(OSError):
            staging_dir.rmdir()
    return final


def clear_staging(offline_dir: Path, world: str | None = None) -> list[Path]:
    """Remove staging files a crashed run left behind (of `world`, or of all); returns them."""
    removed: list[Path] = []
    pattern = f"{world or '*'}/*/{STAGING_DIR_NAME}"
    for staging_dir in sorted(offline_dir.glob(pattern)):
        if staging_dir.is_dir():
            removed += sorted(p for p in staging_dir.rglob("*") if p.is_file())
            shutil.rmtree(staging_dir, ignore_errors=True)
    return removed


def offline_partitions(settings: Settings, world: str, event_type: str) -> list[Path]:
    """The partition files of one event type, oldest day first."""
    root = event_type_dir(settings.offline_dir, world, event_type)
    return sorted(
        path for path in root.glob(f"date=*/{PARTITION_FILE_NAME}") if _partition_day(path)
    )


def _partition_day(path: Path) -> dt.date | None:
    try:
        return dt.date.fromisoformat(path.parent.name.removeprefix("date="))
    except ValueError:
        return None


def read_offline(settings: Settings, world: str, event_type: str) -> pd.DataFrame:
    """All partitions of one event type as one frame (contract columns, oldest day first).

    With no partition yet, an empty frame with the contract's columns and dtypes.
    """
    contract = contract_for(world, event_type)
    if contract is None:
        raise KeyError(f"no contract for {world}/{event_type}")
    root = event_type_dir(settings.offline_dir, world, event_type)
    if not offline_partitions(settings, world, event_type):
        return contract.empty_frame()
    # Discovery lists partitions in path order, which is day order, and skips `_staging`; the
    # schema is the contract's, so the hive `date` key stays out of the columns.
    dataset = pads.dataset(
        root, format="parquet", partitioning="hive", schema=contract.arrow_schema()
    )
    return dataset.to_table().to_pandas()


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk (POSIX only).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
