"""Feature tables on disk: raw events from the offline store in, one parquet table per view out.

Each table goes where its Feast source points: ``<data_dir>/features/tables/<view>.parquet``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from features import fraud, recsys
from features.catalog import (
    EVENT_TIMESTAMP,
    GENRE_AFFINITY_WINDOW,
    ITEM_POPULARITY_WINDOW,
    PROFILE_WINDOW,
    USER_ACTIVITY_WINDOWS,
    VELOCITY_WINDOWS,
    VIEWS,
    views_of_world,
)
from features.table_files import (
    ensure_tables,
    extend_file,
    extendable,
    table_path,
    tables_dir,
    to_arrow,
    with_sentinels,
    write_table,
)
from mlsd.settings import WORLDS, Settings

# The raw columns each builder reads, per world and event type (docs/data-contract.md).
EVENT_COLUMNS: dict[str, dict[str, list[str]]] = {
    "fraud": {
        "transactions": [
            "transaction_id",
            EVENT_TIMESTAMP,
            "card_id",
            "merchant_id",
            "amount",
            "country",
            "device_id",
        ],
        "chargebacks": [
            "transaction_id",
            "card_id",
            "merchant_id",
            "transaction_timestamp",
            "reported_at",
        ],
        "cards": ["card_id", "home_country", "issued_at"],
        "merchants": ["merchant_id", "onboarded_at"],
    },
    "recsys": {
        "interactions": ["interaction_id", EVENT_TIMESTAMP, "user_id", "item_id", "event"],
        "users": ["user_id", "signup_at"],
        "items": ["item_id", "genre", "released_at", "duration_seconds"],
    },
}
# The event type whose latest timestamp is the world's clock ("now" of the simulated world).
CLOCK_EVENTS = {"fraud": "transactions", "recsys": "interactions"}
_TIMESTAMP_COLUMNS = {
    EVENT_TIMESTAMP,
    "transaction_timestamp",
    "reported_at",
    "issued_at",
    "onboarded_at",
    "signup_at",
    "released_at",
}


def manifest_path(settings: Settings) -> Path:
    return tables_dir(settings) / "_manifest.json"


def read_events(settings: Settings, world: str, event_type: str) -> pd.DataFrame:
    """All accepted events of one type from the offline store (hive partitions by date)."""
    columns = EVENT_COLUMNS[world][event_type]
    root = settings.offline_dir / world / event_type
    if not root.is_dir() or not any(root.glob("date=*/*.parquet")):
        return _empty_events(columns)
    # pyarrow skips `_staging` (and every `_`-prefixed path) when it discovers the partitions.
    dataset = pads.dataset(root, format="parquet", partitioning="hive")
    frame = dataset.to_table(columns=columns).to_pandas()
    for column in columns:
        if column in _TIMESTAMP_COLUMNS:
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
    return frame


def _empty_events(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    for column in columns:
        if column in _TIMESTAMP_COLUMNS:
            frame[column] = pd.Series(dtype="datetime64[us, UTC]")
        elif column in ("amount", "duration_seconds"):
            frame[column] = pd.Series(dtype="float64")
        elif column.endswith("_id") and column in ("transaction_id", "interaction_id"):
            frame[column] = pd.Series(dtype="int64")
    return frame


Events = dict[str, pd.DataFrame]
Builder = Callable[[Events, Settings], pd.DataFrame]


def _merchant_risk(events: Events, settings: Settings) -> pd.DataFrame:
    return fraud.merchant_risk(
        events["transactions"],
        events["chargebacks"],
        events["merchants"],
        refresh=dt.timedelta(hours=settings.features.merchant_risk_refresh_hours),
    )


def _recsys_refresh(settings: Settings) -> dt.timedelta:
    return dt.timedelta(hours=settings.features.recsys_refresh_hours)


# Each world's feature tables and the pure function that computes each from its raw events.
TABLE_BUILDERS: dict[str, dict[str, Builder]] = {
    "fraud": {
        "card_velocity": lambda e, _s: fraud.card_velocity(e["transactions"]),
        "card_profile": lambda e, _s: fraud.card_profile(e["transactions"], e["cards"]),
        "card_devices": lambda e, _s: fraud.card_devices(e["transactions"]),
        "merchant_risk": _merchant_risk,
    },
    "recsys": {
        "user_activity": lambda e, s: recsys.user_activity(
            e["interactions"], e["items"], e["users"], refresh=_recsys_refresh(s)
        ),
        "item_stats": lambda e, s: recsys.item_stats(
            e["interactions"], e["items"], refresh=_recsys_refresh(s)
        ),
    },
}


@dataclass(frozen=True)
class LookBack:
    """How far back the rows of an extended view after an instant b reach: they sit where an
    event enters or leaves a window (at the next refresh instant, for a refresh-aligned
    snapshot), so they depend only on the events from b - window - refresh on. `carry_last`
    names an event kind whose latest time per entity is a feature reaching back further than
    any window (a listener's last play): each entity's last such event before the slice is kept.
    """

    events: str
    window: dt.timedelta
    refresh: Callable[[Settings], dt.timedelta] = lambda _s: dt.timedelta(0)
    carry_last: tuple[str, str, str] | None = None  # (entity column, kind column, kind)

    def start(self, boundary: pd.Timestamp, settings: Settings) -> pd.Timestamp:
        return boundary - self.window - self.refresh(settings)


# The views a build extends instead of recomputing. The others depend on all of history (a
# card's known devices) or join two event types (merchant risk: payments and chargebacks), and are recomputed whole.
LOOKBACK: dict[str, LookBack] = {
    "card_velocity": LookBack("transactions", max(VELOCITY_WINDOWS.values())),
    "card_profile": LookBack("transactions", PROFILE_WINDOW[1]),
    "user_activity": LookBack(
        "interactions",
        max(*USER_ACTIVITY_WINDOWS.values(), GENRE_AFFINITY_WINDOW[1]),
        _recsys_refresh,
        carry_last=("user_id", "event", "play"),
    ),
    "item_stats": LookBack("interactions", ITEM_POPULARITY_WINDOW[1], _recsys_refresh),
}


def compute_world_tables(world: str, events: Events, settings: Settings) -> dict[str, pd.DataFrame]:
    """The feature tables of one world from its raw events (pure: no I/O)."""
    if world not in TABLE_BUILDERS:
        raise ValueError(f"unknown world {world!r}; expected one of {WORLDS}")
    return {name: build(events, settings) for name, build in TABLE_BUILDERS[world].items()}


def _look_back(events: Events, view: str, boundary: pd.Timestamp, settings: Settings) -> Events:
    """The events `view` needs for its rows after `boundary` (see LookBack)."""
    look = LOOKBACK[view]
    frame = events[look.events]
    recent = frame[EVENT_TIMESTAMP] >= look.start(boundary, settings)
    sliced = frame[recent]
    if look.carry_last is not None:
        # Outside every window after `boundary`, so it moves no count: it only carries the time.
        entity, kind_column, kind = look.carry_last
        older = frame[~recent & (frame[kind_column] == kind)]
        older = older.sort_values(EVENT_TIMESTAMP, kind="stable").drop_duplicates(
            entity, keep="last"
        )
        sliced = pd.concat([older, sliced])
    return {**events, look.events: sliced.reset_index(drop=True)}


@dataclass
class WorldBuild:
    world: str
    as_of: dt.datetime | None
    events: dict[str, int]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # True when events at or before the previous build's clock differ from what that build saw
    # (e.g. a re-simulated world): materialisation only moves forward, so the online store
    # then holds the old past until it is reset.
    past_rewritten: bool = False
    # The views extended past the previous build's clock instead of recomputed (see LOOKBACK).
    extended: list[str] = field(default_factory=list)


def build(
    settings: Settings,
    worlds: Sequence[str] = WORLDS,
    *,
    on_step: Callable[[str], None] | None = None,
    incremental: bool = False,
) -> list[WorldBuild]:
    """Compute every feature table of `worlds` from the offline store and write them.

    A world with no events yet is skipped (its tables stay as they were, or empty).

    `incremental`: when the previous build saw exactly the events up to its clock (nothing in
    that past was rewritten), the views of LOOKBACK keep their rows up to that clock and only
    the rows after it are computed, from a look-back slice of the events. On the demo's world
    (731,000 transactions) that is what makes a landed day cheap; a full build of the same
    world and the extended one agree at every instant (tests/integration/
    test_feature_store_pipeline.py), up to float rounding of the windowed sums.
    """
    import time

    results = []
    for world in worlds:
        started = time.perf_counter()
        if on_step:
            on_step(f"{world}: reading the offline store")
        events = {name: read_events(settings, world, name) for name in EVENT_COLUMNS[world]}
        clock = events[CLOCK_EVENTS[world]]
        result = WorldBuild(world, None, {name: len(frame) for name, frame in events.items()})
        if clock.empty:
            results.append(result)
            continue
        result.as_of = clock[EVENT_TIMESTAMP].max().to_pydatetime()
        previous = read_manifest(settings).get(world)
        if previous:
            before = clock[EVENT_TIMESTAMP] <= pd.Timestamp(previous["as_of"])
            result.past_rewritten = int(before.sum()) != previous["events"][
                CLOCK_EVENTS[world]
            ] or (result.as_of < dt.datetime.fromisoformat(previous["as_of"]))
        if on_step:
            on_step(f"{world}: computing {', '.join(v.name for v in views_of_world(world))}")
        boundary = None
        if incremental and previous and not result.past_rewritten:
            boundary = pd.Timestamp(previous["as_of"])
        for name, compute in TABLE_BUILDERS[world].items():
            view, path = VIEWS[name], table_path(settings, name)
            if boundary is not None and name in LOOKBACK and extendable(path, view):
                frame = compute(_look_back(events, name, boundary, settings), settings)
                result.rows[name] = extend_file(path, frame, view, boundary)
                result.extended.append(name)
            else:
                table = to_arrow(with_sentinels(compute(events, settings), view), view)
                write_table(path, table)
                result.rows[name] = table.num_rows
        result.seconds = time.perf_counter() - started
        results.append(result)
    ensure_tables(settings)
    _update_manifest(settings, results)
    return results


def _update_manifest(settings: Settings, results: list[WorldBuild]) -> None:
    manifest = read_manifest(settings)
    for r in results:
        if r.as_of is None:
            continue
        manifest[r.world] = {
            "as_of": r.as_of.isoformat(),
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "events": r.events,
            "rows": r.rows,
        }
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(settings: Settings) -> dict[str, Any]:
    path = manifest_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def world_clock(settings: Settings, world: str) -> dt.datetime | None:
    """The latest event time the last build saw: the simulated world's "now"."""
    entry = read_manifest(settings).get(world)
    return dt.datetime.fromisoformat(entry["as_of"]) if entry else None
