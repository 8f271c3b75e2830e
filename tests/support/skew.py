"""Training-serving skew, measured: offline and online features compared value by value.

The point-in-time join and the online store must give a model the same features for the same
entity, request and instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.catalog import (
    EVENT_EPOCH_S,
    EVENT_TIMESTAMP,
    SERVICES,
    service_entities,
    service_features,
    service_request_fields,
)
from features.store import online_features, training_frame
from mlsd.settings import Settings


@dataclass(frozen=True)
class Mismatch:
    row: int
    feature: str
    offline: Any
    online: Any


@dataclass(frozen=True)
class SkewReport:
    feature_service: str
    rows: int
    values_compared: int
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def plain(value: Any) -> Any:
    """A value as plain Python (numpy scalars and arrays unwrapped), for an exact comparison."""
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def same(a: Any, b: Any) -> bool:
    """Equal in value and in kind: 1 and 1.0 differ, as do True and 1 (a model would see both)."""
    a, b = plain(a), plain(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compare_offline_online(
    entity_rows: pd.DataFrame,
    feature_service: str,
    *,
    settings: Settings | None = None,
    engine: Literal["asof", "feast"] | None = None,
) -> SkewReport:
    """Features of each row from the point-in-time join against the online path, value by value.

    The online store answers "as of its last materialisation", so the comparison means something
    when the store was materialised up to exactly the rows' ``event_timestamp`` (one instant for
    all rows). Rows that carry their own ``event_epoch_s`` are requests made at that later time
    (features delivered late, as serving reads them). Every feature of the service counts,
    on-demand ones and unknown markers included.
    """
    spec = SERVICES[feature_service]
    names = [f.name for f in service_features(spec)] + [
        e.unknown_marker for e in service_entities(spec)
    ]
    keys = [e.join_key for e in service_entities(spec)]
    request_fields = [f.name for f in service_request_fields(spec) if f.name in entity_rows]
    offline = training_frame(entity_rows, feature_service, settings=settings, engine=engine)
    mismatches: list[Mismatch] = []
    for i, row in offline.iterrows():
        request = {f: row[f] for f in request_fields}
        request[EVENT_TIMESTAMP] = row[EVENT_TIMESTAMP]
        if EVENT_EPOCH_S in entity_rows:
            micros = round(float(row[EVENT_EPOCH_S]) * 1_000_000)
            request[EVENT_TIMESTAMP] = pd.Timestamp(micros, unit="us", tz="UTC")
        served = online_features(
            {k: row[k] for k in keys}, request, feature_service, settings=settings
        )
        for name in names:
            if not same(row[name], served[name]):
                mismatches.append(Mismatch(int(i), name, plain(row[name]), plain(served[name])))  # type: ignore[call-overload]
    return SkewReport(feature_service, len(offline), len(offline) * len(names), mismatches)
