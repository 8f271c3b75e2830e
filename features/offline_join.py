"""Offline (point-in-time) joins: training frames from the same definitions the online store
serves, each row with the latest feature row at or before its instant."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.catalog import ENTITIES, EVENT_EPOCH_S, EVENT_TIMESTAMP, ON_DEMAND, VIEWS
from features.errors import MissingEntityKeyError, MissingRequestDataError
from features.request_time import epoch_seconds_column
from features.service_plan import ServicePlan, feature_default, missing_message
from features.session import Session, session_for
from features.table_files import ARROW_TYPES, table_path
from mlsd.settings import Settings

ROW_ID = "_mlsd_row"
ON_DEMAND_BATCH_ROWS = 16_384  # rows an on-demand transformation is given at a time (Python lists)


def training_frame(
    entity_rows: pd.DataFrame,
    feature_service: str,
    *,
    settings: Settings | None = None,
    engine: Literal["asof", "feast"] | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for each entity row, from the same definitions the online
    store serves.

    `entity_rows` has the service's join keys, ``event_timestamp`` (the instant each row is as
    of) and the request fields its on-demand features need. Each row gets the latest feature
    row at or before its timestamp, and every feature row counts only events strictly before
    its own time, so an event at exactly t never leaks into its own features. Then the same
    defaults and ``<entity>_unknown`` markers as :func:`online_features`. Rows keep their
    order; the frame has the input columns, ``event_epoch_s`` when the service uses it, then
    the features.

    A row may carry its own ``event_epoch_s``, the request's clock, later than its
    ``event_timestamp``: the stored features are then as of that earlier instant and the
    on-demand ones are computed at the request's time, which is how serving reads features a
    batch pipeline delivers late (``training.fraud.stored_features_as_of``).

    `engine` (default: the ``features.training_engine`` setting) picks who does the join:
    ``asof`` (pandas ``merge_asof`` over the views' tables, then the registry's on-demand
    transforms, as Feast applies them) or ``feast`` (``get_historical_features``). Both give the
    same frame; the tests hold them to each other and to the online store.
    """
    session = session_for(settings)
    plan = session.plan(feature_service)
    rows = _training_rows(plan, entity_rows)
    if rows.empty:
        return _finish_frame(plan, rows, pd.DataFrame(index=rows.index))
    if (engine or session.settings.features.training_engine) == "asof":
        joined = _join_asof(session, plan, rows)
    else:
        joined = _join_feast(session, plan, rows)
    lost = rows.index.difference(joined.index)
    if len(lost) or joined.index.has_duplicates:
        raise RuntimeError(
            f"the point-in-time join returned {len(joined)} rows for {len(rows)} entity rows "
            f"({len(lost)} lost); this is a bug in features.store"
        )
    return _finish_frame(plan, rows, joined)


def _join_feast(session: Session, plan: ServicePlan, rows: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for chunk in _chunks(session.settings, plan, rows):
        job = session.store.get_historical_features(entity_df=chunk, features=plan.feast_service)
        parts.append(job.to_df())
    return pd.concat(parts, ignore_index=True).set_index(ROW_ID).sort_index()


def _join_asof(session: Session, plan: ServicePlan, rows: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time semantics (latest row at or before t, per entity; nothing when
    there is none) with ``merge_asof``: O(n log n) instead of the parquet store's pairing of
    every entity row with every row of its entity."""
    import pyarrow as pa

    columns = [*plan.join_keys, EVENT_TIMESTAMP, *(f.name for f in plan.request_fields)]
    if plan.needs_clock:
        columns.append(EVENT_EPOCH_S)
    left = rows[columns].reset_index()
    left["_asof"] = pd.to_datetime(left[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    left = left.sort_values("_asof", kind="stable")
    for view, key, _ in plan.stored_views:
        table = _view_table(table_path(session.settings, view), key)
        left = pd.merge_asof(
            left, table, on="_asof", by=key, direction="backward", allow_exact_matches=True
        )
    left = left.drop(columns="_asof")
    if not plan.spec.on_demand:
        return left.set_index(ROW_ID).sort_index()
    # The registry's own on-demand views, as Feast's retrieval job applies one in Python mode
    # (`Table.from_pydict(udf(table.to_pydict()))`), to the columns it reads and a batch of rows
    # at a time: Feast hands the transformation the whole table as Python lists, each feature
    # twice (short and long name). Measured on a demo's retrain (about 215,000 rows, 2 cores):
    # that took 276 MB above what the join held; the training set's peak fell from 1,129-1,198
    # to 970 MB above the imports this way, and the frame is the same (the transformation goes
    # row by row).
    features_table = pa.Table.from_pandas(left, preserve_index=False)
    for name, (udf, produces) in zip(plan.spec.on_demand, plan.transforms, strict=True):
        inputs = features_table.select(_on_demand_inputs(name))
        # Typed as the catalog declares, not as each batch's values would be guessed.
        schema = pa.schema((f.name, ARROW_TYPES[f.dtype]) for f in ON_DEMAND[name].features)
        transformed = pa.concat_tables(
            [
                pa.Table.from_pydict(udf(batch.to_pydict()), schema=schema)
                for batch in inputs.to_batches(max_chunksize=ON_DEMAND_BATCH_ROWS)
            ]
        )
        for feature in produces:
            features_table = features_table.append_column(feature, transformed[feature])
    return features_table.to_pandas().set_index(ROW_ID).sort_index()


def _on_demand_inputs(name: str) -> list[str]:
    """The columns on-demand view `name` reads: its request fields and its source views'
    features."""
    spec = ON_DEMAND[name]
    return [
        *(f.name for f in spec.request),
        *(f.name for view in spec.sources for f in VIEWS[view].features),
    ]


_VIEW_TABLES: dict[str, tuple[tuple[int, int], pd.DataFrame]] = {}


def forget_view_tables() -> None:
    """Drop the view tables the joins of this process read (they are read again on the next
    join), and hand the memory back to the system: a training run, once its training set is
    built, has no use for the history. Arrow's allocator and glibc's keep freed memory for
    reuse; measured after a demo retrain's training set (2 cores), the process held 884 MB
    above its imports, 666 MB once Arrow's pool released what it kept, about 300 MB once glibc
    trimmed its heap."""
    import ctypes

    import pyarrow as pa

    _VIEW_TABLES.clear()
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not macOS, not musl)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim(0)


def _view_table(path: Path, key: str) -> pd.DataFrame:
    """A view's table sorted by time, read once per version of the file.

    Read and put in time order a column at a time, so the whole table is in memory once, not
    three times (Arrow's, pandas', then sorted). Measured on a demo's card-velocity table
    (2.25 M rows, 2 cores): reading it whole then sorting the frame peaked 745 MB above the
    process's baseline and took 1.8 s; a column at a time, 411 MB and 0.7 s, the same frame.
    The view tables are most of what a training run holds."""
    import pyarrow.compute as pc

    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _VIEW_TABLES.get(str(path))
    if cached is None or cached[0] != version:
        with pq.ParquetFile(path) as table:
            # Arrow's sort is stable, as the merge needs: rows of one instant keep their order.
            order = pc.sort_indices(table.read(columns=[EVENT_TIMESTAMP]).column(0))
            columns = {}
            for name in [
                *(n for n in table.schema_arrow.names if n != EVENT_TIMESTAMP),
                EVENT_TIMESTAMP,
            ]:
                values = table.read(columns=[name]).column(0).take(order).to_pandas()
                if name == EVENT_TIMESTAMP:
                    columns["_asof"] = pd.to_datetime(values, utc=True).astype(
                        "datetime64[ns, UTC]"
                    )
                else:
                    columns[name] = values.astype("object") if name == key else values
        cached = _VIEW_TABLES[str(path)] = (version, pd.DataFrame(columns, copy=False))
    return cached[1]


def _training_rows(plan: ServicePlan, entity_rows: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(entity_rows, pd.DataFrame):
        raise TypeError(f"entity_rows must be a pandas DataFrame, not {type(entity_rows).__name__}")
    needed = [*plan.join_keys, EVENT_TIMESTAMP]
    absent = [c for c in needed if c not in entity_rows or entity_rows[c].isna().any()]
    if absent:
        raise MissingEntityKeyError(
            f"feature service {plan.spec.name!r} needs column(s) {absent} with no nulls in entity_rows "
            f"(it has {list(entity_rows.columns)})",
            absent,
        )
    missing = [
        f
        for f in plan.request_fields
        if f.name not in entity_rows or entity_rows[f.name].isna().any()
    ]
    if missing:
        raise MissingRequestDataError(
            missing_message(plan, missing).replace("the request", "entity_rows (or null there)"),
            [f.name for f in missing],
        )
    rows = entity_rows.copy().reset_index(drop=True)
    rows[EVENT_TIMESTAMP] = pd.to_datetime(rows[EVENT_TIMESTAMP], utc=True)
    for key in plan.join_keys:
        rows[key] = rows[key].astype(str)
    for field in plan.request_fields:
        if field.dtype == "float64":
            rows[field.name] = rows[field.name].astype("float64")
        elif field.dtype == "string":
            rows[field.name] = rows[field.name].astype(str)
    if plan.needs_clock:
        rows[EVENT_EPOCH_S] = request_clock(rows)
    rows.index.name = ROW_ID
    return rows


def request_clock(rows: pd.DataFrame) -> pd.Series:
    """Each row's request clock in epoch seconds: its own ``event_epoch_s`` where it has one
    (features_as_served), else the instant its stored features are read as of. A clock earlier
    than that instant is refused: the features would be from the request's future."""
    at_lookup = pd.Series(epoch_seconds_column(rows[EVENT_TIMESTAMP]), index=rows.index)
    if EVENT_EPOCH_S not in rows:
        return at_lookup
    clock = rows[EVENT_EPOCH_S].astype("float64").fillna(at_lookup)
    early = clock < at_lookup - 1e-6
    if early.any():
        raise ValueError(
            f"{int(early.sum())} of {len(rows)} entity rows have an {EVENT_EPOCH_S} earlier than "
            f"their {EVENT_TIMESTAMP}: a request's clock cannot precede the instant its stored "
            "features are read as of (they would be from its future)"
        )
    return clock


def _chunks(settings: Settings, plan: ServicePlan, rows: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """Entity frames Feast can join without losing or blowing up rows.

    Feast's parquet store keeps one entity row per (join key, timestamp) of each view it joins
    (for a card view: per card and instant, whatever the merchant or the request), so rows that
    share one go to separate rounds; and its join first pairs every entity row with every table
    row of the same entity, so each round is cut where that product would pass the budget.
    """
    columns = [*plan.join_keys, EVENT_TIMESTAMP, *(f.name for f in plan.request_fields)]
    if plan.needs_clock:
        columns.append(EVENT_EPOCH_S)
    frame = rows[columns].reset_index()
    repeat = _rounds(frame, plan.join_keys)
    weight = np.ones(len(frame), dtype="int64")
    for view in plan.spec.views:
        key = ENTITIES[VIEWS[view].entity].join_key
        counts = _entity_row_counts(table_path(settings, view), key)
        weight += frame[key].map(counts).fillna(0).to_numpy(dtype="int64")
    budget = settings.features.training_join_budget_rows
    for round_ in range(int(repeat.max()) + 1):
        in_round = repeat == round_
        part, part_weight = frame[in_round], weight[in_round]
        chunk_id = np.cumsum(part_weight) // max(budget, 1)
        for _, chunk in part.groupby(chunk_id, sort=True):
            yield chunk


def _rounds(frame: pd.DataFrame, join_keys: Sequence[str]) -> np.ndarray:
    """Number each row's round so that within a round every (join key, timestamp) is unique."""
    round_of = np.full(len(frame), -1, dtype="int64")
    remaining = np.arange(len(frame))
    current = 0
    while len(remaining):
        part = frame.iloc[remaining]
        take = np.ones(len(part), dtype=bool)
        for key in join_keys:
            take &= ~part.duplicated([key, EVENT_TIMESTAMP]).to_numpy()
        # The first remaining row is a first occurrence of every key, so each round takes one.
        round_of[remaining[take]] = current
        remaining = remaining[~take]
        current += 1
    return round_of


_ROW_COUNTS: dict[tuple[str, int, int], pd.Series] = {}


def _entity_row_counts(path: Path, key: str) -> pd.Series:
    if not path.exists():
        return pd.Series(dtype="int64")
    stat = path.stat()
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    counts = _ROW_COUNTS.get(cache_key)
    if counts is None:
        column = pq.read_table(path, columns=[key]).column(0).to_pandas()
        counts = _ROW_COUNTS[cache_key] = column.value_counts()
    return counts


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _finish_frame(plan: ServicePlan, rows: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    missing: dict[str, np.ndarray] = {}
    for spec in plan.outputs:
        column = (
            joined[spec.name]
            if spec.name in joined
            else pd.Series(None, index=rows.index, dtype="object")
        )
        column = column.reindex(rows.index)
        if spec.dtype.endswith("_list"):
            is_missing = column.map(_is_missing).to_numpy(dtype=bool)
            values = [
                feature_default(spec)
                if m
                else [v.item() if hasattr(v, "item") else v for v in value]
                for m, value in zip(is_missing, column, strict=True)
            ]
            out[spec.name] = pd.Series(values, index=rows.index, dtype="object")
        else:
            is_missing = column.isna().to_numpy()
            filled = column.astype("object").where(~is_missing, spec.default)
            dtype: Any = {"int64": "int64", "float64": "float64"}.get(spec.dtype, "object")
            out[spec.name] = filled.astype(dtype)
        missing[spec.name] = is_missing
    for marker, names in plan.unknown_checks:
        out[marker] = np.logical_and.reduce([missing[n] for n in names]) if names else False
    return out.reset_index(drop=True)
