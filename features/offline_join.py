"""Offline (point-in-time) joins: training frames from the same definitions the online store
serves, each row with the latest feature row at or before its instant."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

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
        # One open file for the index and the columns: a landing may replace the table
        # meanwhile (os.replace), and row numbers of one version taken from another would be
        # silently wrong.
        with table_path(session.settings, view).open("rb") as handle:
            index = _view_index(handle, key)
            # Which table row each entity row gets, found on the table's keys and times alone;
            # then only those rows of each feature column are read into the frame.
            matched = pd.merge_asof(
                pd.DataFrame({"_asof": left["_asof"], "_key": index.codes_of(left[key])}),
                index.rows,
                on="_asof",
                by="_key",
                direction="backward",
                allow_exact_matches=True,
            )["_row"]
            rows_taken = pa.array(
                matched.fillna(-1).to_numpy(dtype="int64"), mask=matched.isna().to_numpy()
            )
            table = pq.ParquetFile(handle)
            for name in index.features:
                column = table.read(columns=[name]).column(name).take(rows_taken)
                left[name] = column.to_pandas().to_numpy()
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
    for name, (udf, produces) in zip(plan.spec.on_demand, plan.transforms, strict=True):
        inputs = pa.Table.from_pandas(left[_on_demand_inputs(name)], preserve_index=False)
        # Typed as the catalog declares, not as each batch's values would be guessed.
        schema = pa.schema((f.name, ARROW_TYPES[f.dtype]) for f in ON_DEMAND[name].features)
        transformed = pa.concat_tables(
            [
                pa.Table.from_pydict(udf(batch.to_pydict()), schema=schema)
                for batch in inputs.to_batches(max_chunksize=ON_DEMAND_BATCH_ROWS)
            ]
        )
        for feature in produces:
            left[feature] = transformed.column(feature).to_pandas().to_numpy()
    return left.set_index(ROW_ID).sort_index()


def _on_demand_inputs(name: str) -> list[str]:
    """The columns on-demand view `name` reads: its request fields and its source views'
    features."""
    spec = ON_DEMAND[name]
    return [
        *(f.name for f in spec.request),
        *(f.name for view in spec.sources for f in VIEWS[view].features),
    ]


@dataclass(frozen=True)
class _ViewIndex:
    """What a point-in-time join needs of a view's table to find each entity row's feature row:
    its keys (as codes into `keys`) and times, in time order, with each row's place in the file."""

    keys: pd.Index
    rows: pd.DataFrame  # _asof (time order, stable), _key (code into keys), _row (row in file)
    features: list[str]

    def codes_of(self, keys: pd.Series) -> np.ndarray:
        """Each entity key's code in this table, -1 for a key the table does not have."""
        return self.keys.get_indexer(pd.Index(keys))


# By file and key; each with the version of the file it was read from (inode, mtime, size).
_VIEW_INDEXES: dict[tuple[str, str], tuple[tuple[int, int, int], _ViewIndex]] = {}


def forget_view_tables() -> None:
    """Drop what the joins of this process kept of the view tables (it is read again on the
    next join), and hand the memory back to the system: a training run, once its training set
    is built, has no use for the history. Arrow's allocator and glibc's keep freed memory for
    reuse; measured after a demo retrain's training set (2 cores), the process held 884 MB
    above its imports, 666 MB once Arrow's pool released what it kept, about 300 MB once glibc
    trimmed its heap (when the joins still held whole view tables)."""
    import ctypes

    import pyarrow as pa

    _VIEW_INDEXES.clear()
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not macOS, not musl)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim(0)


def _view_index(handle: BinaryIO, key: str) -> _ViewIndex:
    """A view's keys and times in time order, from the open file `handle`; kept for the next
    join while the file is the same version.

    The join reads only these two columns whole; each feature column is then read and only
    the matched rows kept (a training set has one row per entity row, the table one per event
    of the entity's history). Measured on a demo's world after its acts (2 cores, a fraud
    retrain's 227,000 entity rows against 2.57 M card-velocity and 1.29 M card-profile rows):
    the training set's peak fell from 1,145-1,174 MB above the imports, when the joins held the
    two tables whole as pandas frames, to 816-876 MB, and from 9.7 to 7-8 s; the frame is the
    same (checked equal)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stat = os.fstat(handle.fileno())
    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cache_key = (str(handle.name), key)
    cached = _VIEW_INDEXES.get(cache_key)
    if cached is None or cached[0] != version:
        # Keys read as the file stores them, dictionary-encoded: codes, not a string per row.
        with pq.ParquetFile(handle, read_dictionary=[key]) as table:
            times = table.read(columns=[EVENT_TIMESTAMP]).column(0)
            # Arrow's sort is stable, as the merge needs: rows of one instant keep their order.
            order = pc.sort_indices(times)
            keys = table.read(columns=[key]).unify_dictionaries().column(0)
            distinct = keys.chunk(0).dictionary if keys.num_chunks else pa.array([], pa.string())
            codes = pa.chunked_array([chunk.indices for chunk in keys.chunks], pa.int32()).take(
                order
            )
            at = times.take(order).cast(pa.timestamp("ns", "UTC")).to_pandas()
            rows = pd.DataFrame(
                {
                    "_asof": at,
                    "_key": codes.to_numpy().astype("int64"),
                    "_row": order.to_numpy().astype("int64"),
                },
                copy=False,
            )
            features = [n for n in table.schema_arrow.names if n not in (key, EVENT_TIMESTAMP)]
        index = _ViewIndex(pd.Index(distinct.to_pandas()), rows, features)
        cached = _VIEW_INDEXES[cache_key] = (version, index)
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
