"""Write retrieval vectors back into the feature store, so serving reads them like any feature."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.catalog import ENTITIES, EVENT_TIMESTAMP, VIEWS
from features.table_files import table_path, to_arrow, with_sentinels, write_table
from features.tables import world_clock
from mlsd.settings import Settings

Kind = Literal["user", "item"]


@dataclass(frozen=True)
class EmbeddingWrite:
    view: str
    rows: int
    dimension: int
    event_timestamp: dt.datetime
    seconds: float


def write_embeddings(
    settings: Settings,
    kind: Kind,
    frame: pd.DataFrame,
    *,
    version: str = "",
    event_timestamp: dt.datetime | None = None,
) -> EmbeddingWrite:
    """Append vectors to the ``<kind>_embedding`` table and load them into the online store.

    `frame` has ``<kind>_id`` and ``vector`` (a sequence of floats, one length for all rows).
    They are stamped `event_timestamp`, by default the recsys world's clock (so a training frame
    as of later sees them) or now when no world was built. Earlier vectors stay in the table, so a
    point-in-time join still gives a row the vectors that existed then.
    """
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'user' or 'item', not {kind!r}")
    view = VIEWS[f"{kind}_embedding"]
    key = ENTITIES[view.entity].join_key
    for column in (key, "vector"):
        if column not in frame:
            raise ValueError(
                f"embedding frame needs a {column!r} column; it has {list(frame.columns)}"
            )
    vectors = [np.asarray(v, dtype=np.float32) for v in frame["vector"]]
    dimensions = {v.shape for v in vectors}
    if len(dimensions) > 1 or any(len(d) != 1 for d in dimensions):
        raise ValueError(
            f"every vector must be 1-D with one length; got shapes {sorted(dimensions)}"
        )
    if any(not np.isfinite(v).all() for v in vectors):
        raise ValueError("vectors must be finite (no NaN or inf)")
    stamp = event_timestamp or world_clock(settings, view.world) or dt.datetime.now(dt.UTC)
    stamp = (
        pd.Timestamp(stamp).tz_convert("UTC")
        if pd.Timestamp(stamp).tzinfo
        else pd.Timestamp(stamp, tz="UTC")
    )

    started = time.perf_counter()
    new = pd.DataFrame(
        {
            key: frame[key].astype(str).to_numpy(),
            EVENT_TIMESTAMP: pd.Series([stamp] * len(frame)).dt.as_unit("us"),
            f"{kind}_vector": [v.tolist() for v in vectors],
            f"{kind}_embedding_version": version,
        }
    )
    path = table_path(settings, view.name)
    history = pq.read_table(path).to_pandas() if path.exists() else new.iloc[:0]
    combined = pd.concat([history, new], ignore_index=True)
    # A rewrite of the same (entity, time) keeps the latest vector: Feast needs one row per pair.
    combined = combined.drop_duplicates([key, EVENT_TIMESTAMP], keep="last")
    write_table(path, to_arrow(with_sentinels(combined, view), view))

    from features.feast_config import feast_output_silenced
    from features.session import get_store

    moment = stamp.to_pydatetime()
    with feast_output_silenced(True):
        get_store(settings).materialize(
            start_date=moment, end_date=moment, feature_views=[view.name]
        )
    dimension = int(next(iter(dimensions))[0]) if dimensions else 0
    return EmbeddingWrite(view.name, len(new), dimension, moment, time.perf_counter() - started)


def read_embeddings(settings: Settings, kind: Kind) -> pd.DataFrame:
    """The latest vector of every entity (e.g. to build the retrieval index)."""
    view = VIEWS[f"{kind}_embedding"]
    key = ENTITIES[view.entity].join_key
    path = table_path(settings, view.name)
    if not path.exists():
        return pd.DataFrame(
            columns=[key, EVENT_TIMESTAMP, f"{kind}_vector", f"{kind}_embedding_version"]
        )
    frame = pq.read_table(path).to_pandas()
    frame = frame[frame[f"{kind}_vector"].notna()]
    latest = frame.sort_values([key, EVENT_TIMESTAMP]).drop_duplicates(key, keep="last")
    return latest.reset_index(drop=True)
