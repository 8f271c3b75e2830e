"""The ingestion gate: validate each landed raw batch, then publish it offline or quarantine it.

Only files cross the boundary: the simulator (the outside world) lands parquet batches under
``raw/<world>/<event_type>/<YYYY-MM-DD>.parquet`` and this module never imports it. See
docs/data-contract.md for the layout and the rules.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsd.settings import Settings
from pipeline.contracts import (
    BAD_BATCH_NAME,
    UNKNOWN_EVENT_TYPE,
    UNREADABLE_FILE,
    ContractGate,
    EventContract,
    FailedExpectation,
    contract_for,
)
from pipeline.offline_store import (
    clear_staging,
    offline_partitions,
    read_offline,
    write_partition,
)

__all__ = [
    "BatchResult",
    "BatchStatus",
    "IngestReport",
    "RawBatch",
    "find_raw_batches",
    "ingest",
    "offline_partitions",
    "read_batch",
    "read_offline",
]

BatchStatus = Literal["accepted", "quarantined"]
OnBatch = Callable[[str, BatchStatus], None]


@dataclass(frozen=True)
class RawBatch:
    """One landed file: `raw/<world>/<event_type>/<name>.parquet`, name being the day."""

    world: str
    event_type: str
    name: str
    path: Path

    @property
    def batch_id(self) -> str:
        return f"{self.world}/{self.event_type}/{self.name}"

    @property
    def day(self) -> dt.date | None:
        """The batch's day, or None when the file name is not a YYYY-MM-DD date."""
        try:
            return dt.date.fromisoformat(self.name)
        except ValueError:
            return None


@dataclass(frozen=True)
class BatchResult:
    """What the gate did with one batch, and where the batch is now."""

    batch_id: str
    world: str
    event_type: str
    day: dt.date | None
    status: BatchStatus
    rows: int | None
    location: Path
    failures: tuple[FailedExpectation, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass
class IngestReport:
    """Everything one `ingest` call did, batch by batch."""

    batches: list[BatchResult] = field(default_factory=list)
    removed_staging_files: list[Path] = field(default_factory=list)

    @property
    def accepted(self) -> list[BatchResult]:
        return [b for b in self.batches if b.accepted]

    @property
    def quarantined(self) -> list[BatchResult]:
        return [b for b in self.batches if not b.accepted]

    @property
    def rows_accepted(self) -> int:
        return sum(b.rows or 0 for b in self.accepted)

    def summary(self) -> dict[str, Any]:
        """Counts, plus each quarantined batch with the expectations it failed."""
        return {
            "batches": len(self.batches),
            "accepted": len(self.accepted),
            "quarantined": len(self.quarantined),
            "rows_accepted": self.rows_accepted,
            "quarantined_batches": {
                b.batch_id: sorted(
                    {
                        f"{f.expectation_type}({f.column})" if f.column else f.expectation_type
                        for f in b.failures
                    }
                )
                for b in self.quarantined
            },
        }


def find_raw_batches(settings: Settings, world: str | None = None) -> list[RawBatch]:
    """Every landed batch, in world, event type and day order.

    Files whose names start with '.' or '_' are someone's work in progress and are skipped.
    """
    if world:
        roots = [settings.raw_dir / world]
    else:
        roots = sorted(
            p
            for p in settings.raw_dir.glob("*")
            if p.is_dir() and not p.name.startswith((".", "_"))
        )
    found = []
    for root in roots:
        for path in root.glob("*/*.parquet"):
            if any(
                part.startswith((".", "_")) for part in path.relative_to(settings.raw_dir).parts
            ):
                continue
            found.append(
                RawBatch(world=root.name, event_type=path.parent.name, name=path.stem, path=path)
            )
    return sorted(found, key=lambda b: (b.world, b.event_type, b.name))


def ingest(
    settings: Settings, world: str | None = None, *, on_batch: OnBatch | None = None
) -> IngestReport:
    """Validate every landed batch (of `world`, or of all worlds) and publish or quarantine it.

    Accepted batches become the partition of their day in the offline store (replacing an earlier
    one, so re-ingesting is idempotent) and their raw file moves to the archive. Rejected batches
    move to the quarantine with a validation.json beside them. An error while publishing
    propagates, after leaving no partial partition behind and the raw file where it was.
    `on_batch(batch_id, status)` is called after each batch, e.g. to drive a progress bar.
    """
    report = IngestReport()
    report.removed_staging_files = clear_staging(settings.offline_dir, world)
    batches = find_raw_batches(settings, world)
    if not batches:
        return report
    gate = ContractGate()
    for batch in batches:
        result = _ingest_batch(settings, gate, batch)
        report.batches.append(result)
        if on_batch is not None:
            on_batch(result.batch_id, result.status)
    return report


def _ingest_batch(settings: Settings, gate: ContractGate, batch: RawBatch) -> BatchResult:
    contract = contract_for(batch.world, batch.event_type)
    if contract is None:
        return _reject_file(
            settings,
            batch,
            UNKNOWN_EVENT_TYPE,
            f"the platform has no contract for {batch.world}/{batch.event_type}",
        )
    day = batch.day
    if day is None:
        return _reject_file(
            settings, batch, BAD_BATCH_NAME, f"file name {batch.name!r} is not a YYYY-MM-DD day"
        )
    try:
        frame = read_batch(batch.path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return _reject_file(
            settings,
            batch,
            UNREADABLE_FILE,
            f"not a readable parquet file: {type(exc).__name__}: {exc}",
        )
    outcome = gate.validate(contract, frame, day)
    if not outcome.success:
        return _quarantine(
            settings, batch, rows=len(frame), evaluated=outcome.evaluated, failures=outcome.failures
        )
    return _publish(settings, batch, contract, day, frame)


def read_batch(path: Path) -> pd.DataFrame:
    """A landed parquet file as the gate sees it: dtypes follow from the file's Arrow types alone.

    The pandas metadata a producer may have written is dropped on purpose: with it, an int64
    column written from a nullable Int64 frame would come back as Int64 and fail a file that
    meets the contract, and a non-default index would come back as data.
    """
    table = pq.read_table(path)
    stored_index = [
        name
        for name in (table.schema.pandas_metadata or {}).get("index_columns", [])
        if isinstance(name, str)
    ]
    return table.drop_columns(stored_index).replace_schema_metadata(None).to_pandas()


def _publish(
    settings: Settings, batch: RawBatch, contract: EventContract, day: dt.date, frame: pd.DataFrame
) -> BatchResult:
    # Written with the contract's schema, so every partition of a type reads back alike however
    # the producer spelled its types (object or string dtype, string or large_string).
    table = pa.Table.from_pandas(frame, schema=contract.arrow_schema(), preserve_index=False)
    partition = write_partition(settings.offline_dir, batch.world, batch.event_type, day, table)
    _move(batch.path, settings.archive_dir / batch.world / batch.event_type / batch.path.name)
    # A batch that was quarantined before and has now landed again, fixed, is no longer bad.
    stale = _quarantine_paths(settings, batch)
    for path in stale:
        path.unlink(missing_ok=True)
    return BatchResult(
        batch.batch_id, batch.world, batch.event_type, day, "accepted", len(frame), partition
    )


def _quarantine(
    settings: Settings,
    batch: RawBatch,
    *,
    rows: int | None,
    evaluated: int,
    failures: list[FailedExpectation],
) -> BatchResult:
    target, validation_json = _quarantine_paths(settings, batch)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "batch_id": batch.batch_id,
        "world": batch.world,
        "event_type": batch.event_type,
        "date": batch.name,
        "validated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": str(batch.path.relative_to(settings.data_dir)),
        "rows": rows,
        "evaluated_expectations": evaluated,
        "failed_expectations": [f.to_dict() for f in failures],
    }
    _write_text_atomically(validation_json, json.dumps(document, indent=2) + "\n")
    _move(batch.path, target)
    return BatchResult(
        batch.batch_id,
        batch.world,
        batch.event_type,
        batch.day,
        "quarantined",
        rows,
        target,
        tuple(failures),
    )


def _reject_file(settings: Settings, batch: RawBatch, check: str, reason: str) -> BatchResult:
    """Quarantine a batch that failed before its contract could be run."""
    return _quarantine(
        settings,
        batch,
        rows=None,
        evaluated=0,
        failures=[FailedExpectation(expectation_type=check, column=None, reason=reason)],
    )


def _quarantine_paths(settings: Settings, batch: RawBatch) -> tuple[Path, Path]:
    folder = settings.quarantine_dir / batch.world / batch.event_type
    return folder / batch.path.name, folder / f"{batch.name}.validation.json"


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _write_text_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    try:
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
