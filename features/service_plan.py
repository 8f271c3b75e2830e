"""What a feature service needs from a request and how its answer is finished: the one plan the
online path and the point-in-time path both follow, so a model sees identical features in both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from features.catalog import (
    ENTITIES,
    EVENT_EPOCH_S,
    ON_DEMAND,
    SERVICES,
    VIEWS,
    FeatureSpec,
    RequestFieldSpec,
    ServiceSpec,
    service_entities,
    service_features,
    service_request_fields,
)
from features.errors import UnknownFeatureServiceError

if TYPE_CHECKING:
    from feast import FeatureService


@dataclass(frozen=True)
class ServicePlan:
    """What one feature service needs from a request and how its answer is finished."""

    spec: ServiceSpec
    feast_service: FeatureService
    join_keys: tuple[str, ...]
    request_fields: tuple[RequestFieldSpec, ...]
    needs_clock: bool
    outputs: tuple[FeatureSpec, ...]
    unknown_checks: tuple[tuple[str, tuple[str, ...]], ...]
    # What is read from the store: per stored view (the service's and its on-demand views'
    # sources), the join key of its entity and the view's feature names. Then the registry's
    # own on-demand functions, with the names they produce.
    stored_views: tuple[tuple[str, str, tuple[str, ...]], ...]
    transforms: tuple[tuple[Callable[[dict[str, list]], dict[str, list]], tuple[str, ...]], ...]


def service_plan(
    name: str, feast_service: Any, transforms: Sequence[Callable[..., Any]] = ()
) -> ServicePlan:
    """What a request for feature service `name` must carry and how its answer is finished."""
    spec = SERVICES.get(name)
    if spec is None:
        raise UnknownFeatureServiceError(
            f"no feature service {name!r}; known: {', '.join(SERVICES)}"
        )
    entities = service_entities(spec)
    checks = tuple(
        (
            e.unknown_marker,
            tuple(f.name for v in spec.views if VIEWS[v].entity == e.name for f in VIEWS[v].served),
        )
        for e in entities
    )
    views = dict.fromkeys([*spec.views, *(s for o in spec.on_demand for s in ON_DEMAND[o].sources)])
    return ServicePlan(
        spec=spec,
        feast_service=feast_service,
        join_keys=tuple(e.join_key for e in entities),
        request_fields=tuple(f for f in service_request_fields(spec) if f.name != EVENT_EPOCH_S),
        needs_clock=any(f.name == EVENT_EPOCH_S for f in service_request_fields(spec)),
        outputs=service_features(spec),
        unknown_checks=checks,
        stored_views=tuple(
            (v, ENTITIES[VIEWS[v].entity].join_key, tuple(f.name for f in VIEWS[v].features))
            for v in views
        ),
        transforms=tuple(
            (udf, tuple(f.name for f in ON_DEMAND[o].features))
            for udf, o in zip(transforms, spec.on_demand, strict=False)
        ),
    )


def missing_message(plan: ServicePlan, missing: Sequence[RequestFieldSpec]) -> str:
    listed = "; ".join(f"{f.name!r} ({f.description})" for f in missing)
    return f"feature service {plan.spec.name!r} needs request field(s) missing from the request: {listed}"


def feature_default(spec: FeatureSpec) -> Any:
    return list(spec.default) if isinstance(spec.default, list) else spec.default
