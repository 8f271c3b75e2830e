"""Online reads: the features of entities from the online store, with the on-demand features
computed from the request, finished as the training frame is (defaults, unknown markers)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from features.catalog import EVENT_EPOCH_S, EVENT_TIMESTAMP, RequestFieldSpec
from features.errors import FeatureRequestError, MissingEntityKeyError, MissingRequestDataError
from features.online_cache import OnlineFeatureCache
from features.request_time import epoch_seconds
from features.service_plan import ServicePlan, feature_default, missing_message
from features.session import Session, session_for
from mlsd.settings import Settings


def online_features(
    entity: Mapping[str, Any],
    request_data: Mapping[str, Any] | None,
    feature_service: str,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The features of one entity for `feature_service`, from the online store, with the
    on-demand features computed from `request_data`.

    `entity` maps join keys to ids (``{"card_id": ..., "merchant_id": ...}``). `request_data`
    holds what only the request knows (for fraud: amount, country, device_id) and optionally its
    ``event_timestamp`` (default: now). Returns ``{feature: value}`` plus ``<entity>_unknown``
    markers; what the store does not know comes back as the feature's default, never None.
    Raises :class:`MissingRequestDataError` / :class:`MissingEntityKeyError` naming the field.
    """
    return online_features_many([entity], request_data, feature_service, settings=settings)[0]


def online_features_many(
    entities: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    feature_service: str,
    *,
    settings: Settings | None = None,
    cache: OnlineFeatureCache | None = None,
) -> list[dict[str, Any]]:
    """:func:`online_features` for several entities (e.g. ranking a slate of candidates);
    `request_data` is one mapping for all rows, or one per row.

    Each distinct key is read once (a slate of 100 candidates for one user builds the user's
    features once, not 100 times). `cache` lets the caller reuse recently read rows of the
    views it names (see :class:`OnlineFeatureCache`)."""
    columns = online_feature_columns(
        entities, request_data, feature_service, settings=settings, cache=cache
    )
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def online_feature_columns(
    entities: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    feature_service: str,
    *,
    settings: Settings | None = None,
    cache: OnlineFeatureCache | None = None,
) -> dict[str, list[Any]]:
    """:func:`online_features_many` as columns, {feature: one value per entity}: what a model
    server stacks into its matrix, without building a row per candidate."""
    session = session_for(settings)
    plan = session.plan(feature_service)
    if not entities:
        return finish_online(plan, {spec.name: [] for spec in plan.outputs}, 0)
    if request_data is None or isinstance(request_data, Mapping):
        requests: Sequence[Mapping[str, Any] | None] = [request_data] * len(entities)
    else:
        requests = request_data
    rows = [online_row(plan, e, r) for e, r in zip(entities, requests, strict=True)]
    # Stored features from Feast, then the registered on-demand functions called directly on
    # them: the same functions Feast applies to training frames, without Feast's per-request
    # proto round trip through them (about half the latency of a lookup).
    values = _read_stored(session, plan, rows, cache)
    if plan.transforms:
        inputs = dict(values)
        for name in rows[0].keys() - plan.join_keys:
            inputs[name] = [row[name] for row in rows]
        for transform, produces in plan.transforms:
            computed = transform(inputs)
            values.update({name: computed[name] for name in produces})
    return finish_online(plan, values, len(rows))


def _read_stored(
    session: Session,
    plan: ServicePlan,
    rows: Sequence[Mapping[str, Any]],
    cache: OnlineFeatureCache | None,
) -> dict[str, list[Any]]:
    """The stored features of `rows`, per feature a list in row order (plus the join keys).

    The views `cache` does not name are read in one Feast call for the distinct combinations
    of their join keys (one row for a transaction; one user for a slate of items when the item
    view is cached). Each cached view is answered by `cache` per distinct key, its misses read
    in one call and remembered."""
    values: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in plan.join_keys}
    cached = [v for v in plan.stored_views if cache is not None and v[0] in cache.views]
    direct = [v for v in plan.stored_views if v not in cached]
    if direct:
        keys = tuple(dict.fromkeys(key for _, key, _ in direct))
        combos = [tuple(row[k] for k in keys) for row in rows]
        distinct = list(dict.fromkeys(combos))
        read = session.store.get_online_features(
            features=[f"{view}:{name}" for view, _, names in direct for name in names],
            entity_rows=[dict(zip(keys, combo, strict=True)) for combo in distinct],
        ).to_dict()
        position = {combo: i for i, combo in enumerate(distinct)}
        at = [position[combo] for combo in combos]
        for _, _, names in direct:
            for name in names:
                column = read[name]
                values[name] = [column[i] for i in at]
    now = time.monotonic()
    for view, key, names in cached:
        assert cache is not None
        wanted: list[str] = list(dict.fromkeys(row[key] for row in rows))
        found = cache.get_many(view, wanted, now)
        missing = [k for k in wanted if k not in found]
        if missing:
            read = session.store.get_online_features(
                features=[f"{view}:{name}" for name in names],
                entity_rows=[{key: k} for k in missing],
            ).to_dict()
            fresh = {k: {name: read[name][i] for name in names} for i, k in enumerate(missing)}
            cache.put_many(view, fresh, now)
            found.update(fresh)
        for name in names:
            values[name] = [found[row[key]][name] for row in rows]
    return values


def online_row(
    plan: ServicePlan, entity: Mapping[str, Any], request: Mapping[str, Any] | None
) -> dict:
    row: dict[str, Any] = {}
    for key in plan.join_keys:
        value = entity.get(key)
        if value is None:
            raise MissingEntityKeyError(
                f"feature service {plan.spec.name!r} needs entity key {key!r}; the request has "
                f"{sorted(entity) or 'none'}",
                [key],
            )
        row[key] = str(value)
    request = request or {}
    missing = [f for f in plan.request_fields if request.get(f.name) is None]
    if missing:
        raise MissingRequestDataError(missing_message(plan, missing), [f.name for f in missing])
    for field in plan.request_fields:
        row[field.name] = _coerce(field, request[field.name])
    if plan.needs_clock:
        if request.get(EVENT_EPOCH_S) is not None:
            row[EVENT_EPOCH_S] = float(request[EVENT_EPOCH_S])
        elif request.get(EVENT_TIMESTAMP) is not None:
            row[EVENT_EPOCH_S] = epoch_seconds(request[EVENT_TIMESTAMP])
        else:
            row[EVENT_EPOCH_S] = (time.time_ns() // 1000) / 1_000_000
    return row


def _coerce(field: RequestFieldSpec, value: Any) -> Any:
    try:
        if field.dtype == "float64":
            return float(value)
        if field.dtype == "int64":
            return int(value)
        if field.dtype == "string":
            return str(value)
    except (TypeError, ValueError) as err:
        raise FeatureRequestError(
            f"request field {field.name!r} must be {field.dtype}, got {value!r}", [field.name]
        ) from err
    return value


def finish_online(
    plan: ServicePlan, values: Mapping[str, list], count: int
) -> dict[str, list[Any]]:
    """The service's output columns: a value the store lacks becomes its feature's default
    (never None), and each `<entity>_unknown` marker says whether all its view's values were
    missing."""
    out: dict[str, list[Any]] = {
        spec.name: [feature_default(spec) if v is None else v for v in values[spec.name]]
        for spec in plan.outputs
    }
    for marker, names in plan.unknown_checks:
        out[marker] = [all(values[n][i] is None for n in names) for i in range(count)]
    return out
