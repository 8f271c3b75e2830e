"""Apply (register the definitions with Feast, create the online tables) and materialise (load
the feature tables' new rows into the online store, incrementally)."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.catalog import ENTITIES, EVENT_TIMESTAMP, VIEWS
from features.feast_config import feast_output_silenced
from features.session import get_store, reset_stores
from features.table_files import ensure_tables, table_path, tables_dir
from features.tables import world_clock
from mlsd.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass(frozen=True)
class ApplyReport:
    entities: list[str]
    views: list[str]
    on_demand: list[str]
    services: list[str]
    deleted: list[str]
    seconds: float


def apply(settings: Settings | None = None) -> ApplyReport:
    """Register every definition in the registry and create the online tables; delete what is
    no longer defined. Idempotent."""
    from features.definitions import build_definitions

    settings = settings or get_settings()
    started = time.perf_counter()
    ensure_tables(settings)
    definitions = build_definitions(tables_dir(settings))
    store = get_store(settings)
    wanted = {(type(o).__name__, o.name) for o in definitions.all()}
    existing: list[Any] = [
        *store.list_feature_services(),
        *store.list_on_demand_feature_views(),
        *store.list_feature_views(),
        *store.list_entities(),
    ]
    stale = [o for o in existing if (type(o).__name__, o.name) not in wanted]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.apply(definitions.all(), objects_to_delete=stale, partial=False)
    reset_stores()
    return ApplyReport(
        entities=sorted(definitions.entities),
        views=sorted(definitions.views),
        on_demand=sorted(definitions.on_demand),
        services=sorted(definitions.services),
        deleted=sorted(o.name for o in stale),
        seconds=time.perf_counter() - started,
    )


# --- materialize ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewMaterialization:
    view: str
    start: dt.datetime | None
    end: dt.datetime | None
    rows_scanned: int
    entities_written: int
    seconds: float
    skipped: str = ""


def materialize(
    settings: Settings | None = None,
    *,
    end: dt.datetime | None = None,
    views: Sequence[str] | None = None,
    on_view: Callable[[str, int, int], None] | None = None,
    quiet: bool = True,
) -> list[ViewMaterialization]:
    """Load each view's new rows, up to `end`, into the online store (incrementally).

    `end` defaults to the world's clock: the latest event the last build saw (the simulated
    world's "now", not the wall clock); embedding views go up to their newest vector. A view
    materialised before continues from where it stopped. `on_view(name, index, total)` is
    called before each view, for progress.
    """
    settings = settings or get_settings()
    store = get_store(settings)
    names = list(views) if views is not None else list(VIEWS)
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise KeyError(
            f"no feature view {', '.join(map(repr, unknown))}; known: {', '.join(VIEWS)}"
        )
    # Where each view stopped lives in the registry; another process may have moved it.
    store.refresh_registry()
    reports = []
    for index, name in enumerate(names):
        if on_view:
            on_view(name, index, len(names))
        reports.append(_materialize_view(settings, store, name, end, quiet))
    return reports


def _materialize_view(
    settings: Settings, store: FeatureStore, name: str, end: dt.datetime | None, quiet: bool
) -> ViewMaterialization:
    spec = VIEWS[name]
    path = table_path(settings, name)
    times = pq.read_table(path, columns=[EVENT_TIMESTAMP]).column(0) if path.exists() else None
    if times is None or len(times) == 0:
        return ViewMaterialization(name, None, None, 0, 0, 0.0, skipped="empty table")
    if end is None:
        end = (
            world_clock(settings, spec.world)
            if spec.written_by == "build"
            else pc.max(times).as_py()
        )
    if end is None:
        return ViewMaterialization(
            name, None, None, 0, 0, 0.0, skipped="no world clock: run `mlsd features build`"
        )
    end = _utc(end)
    last_end = store.get_feature_view(name).most_recent_end_time
    start = _utc(last_end) if last_end is not None else _utc(pc.min(times).as_py())
    if start >= end:
        return ViewMaterialization(name, start, end, 0, 0, 0.0, skipped="up to date")
    key = ENTITIES[spec.entity].join_key
    started = time.perf_counter()
    if last_end is None:
        rows, entities, _ = _rows_between(path, key, start, end, columns=[key, EVENT_TIMESTAMP])
        with feast_output_silenced(quiet):
            store.materialize(start_date=start, end_date=end, feature_views=[name])
    else:
        with feast_output_silenced(quiet):
            rows, entities = _write_latest_rows(store, name, path, key, start, end)
    return ViewMaterialization(name, start, end, rows, entities, time.perf_counter() - started)


def _write_latest_rows(
    store: FeatureStore, name: str, path: Path, key: str, start: dt.datetime, end: dt.datetime
) -> tuple[int, int]:
    """What `materialize_incremental` does, from the new rows alone: each entity's latest row
    in [start, end] written to the online store (Feast's `write_to_online_store`), then the
    interval recorded in the registry as Feast records it, so the next run continues from `end`.

    Feast's file offline store reads a view's whole table to find those rows (dask,
    `pull_latest_from_table_or_query`); this reads them with a filter on the time column.
    Measured on a 70-day fraud world (2 cores, idle), one day's increment of the four fraud
    views: 4.2 s through Feast, 1.5 s this way; landing a day under the demo's load spent
    10-28 s materialising."""
    rows, entities, latest = _rows_between(path, key, start, end)
    if latest is not None and len(latest):
        store.write_to_online_store(name, latest)
    store.registry.apply_materialization(store.get_feature_view(name), store.project, start, end)
    return rows, entities


def _rows_between(
    path: Path,
    key: str,
    start: dt.datetime,
    end: dt.datetime,
    columns: list[str] | None = None,
) -> tuple[int, int, pd.DataFrame | None]:
    """(rows in [start, end], distinct entities, each entity's latest row when every column
    was read)."""
    table = pq.read_table(
        path,
        columns=columns,
        filters=[
            (EVENT_TIMESTAMP, ">=", pd.Timestamp(start)),
            (EVENT_TIMESTAMP, "<=", pd.Timestamp(end)),
        ],
    )
    entities = len(pc.unique(table.column(key)))
    if columns is not None:
        return table.num_rows, entities, None
    frame = table.to_pandas().sort_values(EVENT_TIMESTAMP, kind="stable")
    return table.num_rows, entities, frame.drop_duplicates(key, keep="last")


def _utc(value: dt.datetime) -> dt.datetime:
    value = pd.Timestamp(value).to_pydatetime()
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
