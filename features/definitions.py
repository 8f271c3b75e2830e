"""The lab's Feast objects (entities, sources, views, on-demand views, services).

They are built from the feature contract in ``features.catalog`` for one data directory.

``features/repo/repo.py`` exposes them to the ``feast`` CLI; ``features.store`` applies them in
process. Both call :func:`build_definitions`, so there is one definition of every feature.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Array, Float32, Float64, Int64, String

from features.catalog import (
    ENTITIES,
    EVENT_TIMESTAMP,
    ON_DEMAND,
    SERVICES,
    VIEWS,
    DType,
    FeatureSpec,
    RequestFieldSpec,
)
from features.on_demand import TRANSFORMATIONS

FEAST_TYPES: dict[DType, Any] = {
    "int64": Int64,
    "float64": Float64,
    "string": String,
    "string_list": Array(String),
    "float64_list": Array(Float64),
    "float32_list": Array(Float32),
}


def table_path(tables_dir: Path, view: str) -> Path:
    """The parquet table behind a view."""
    return tables_dir / f"{view}.parquet"


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the lab, by name."""

    entities: dict[str, Entity]
    sources: dict[str, FileSource]
    request_sources: dict[str, RequestSource]
    views: dict[str, FeatureView]
    on_demand: dict[str, OnDemandFeatureView]
    services: dict[str, FeatureService]

    def all(self) -> list[Any]:
        return [
            *self.entities.values(),
            *self.sources.values(),
            *self.request_sources.values(),
            *self.views.values(),
            *self.on_demand.values(),
            *self.services.values(),
        ]

    def by_name(self) -> dict[str, Any]:
        """Objects under Python-identifier names, for a module Feast's CLI scans."""
        named: dict[str, Any] = {}
        for kind, objects in (
            ("entity", self.entities),
            ("source", self.sources),
            ("request", self.request_sources),
            ("view", self.views),
            ("on_demand", self.on_demand),
            ("service", self.services),
        ):
            for name, obj in objects.items():
                named[f"{name}_{kind}"] = obj
        return named


def _field(spec: FeatureSpec | RequestFieldSpec) -> Field:
    return Field(name=spec.name, dtype=FEAST_TYPES[spec.dtype], description=spec.description)


def _fresh_copy(function: Callable[..., Any]) -> FunctionType:
    # Feast's decorator re-labels the function it wraps as defined in __main__ (so dill stores
    # it by value), after which its source can no longer be found: wrap a copy every time.
    assert isinstance(function, FunctionType)
    copy = FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__doc__ = function.__doc__
    return copy


def build_definitions(tables_dir: Path) -> Definitions:
    """The lab's Feast objects, reading their tables under `tables_dir` (absolute)."""
    entities = {
        e.name: Entity(
            name=e.name,
            join_keys=[e.join_key],
            value_type=ValueType.STRING,
            description=e.description,
        )
        for e in ENTITIES.values()
    }
    sources: dict[str, FileSource] = {}
    views: dict[str, FeatureView] = {}
    for view in VIEWS.values():
        entity = ENTITIES[view.entity]
        sources[view.name] = FileSource(
            name=f"{view.name}_table",
            path=str(table_path(tables_dir, view.name)),
            file_format=ParquetFormat(),
            timestamp_field=EVENT_TIMESTAMP,
            description=f"Feature table of {view.name} (written by {view.written_by}).",
        )
        views[view.name] = FeatureView(
            name=view.name,
            entities=[entities[view.entity]],
            # No TTL: every table carries its own expiry rows (a window emptying is a row), and
            # Feast checks an online TTL against the wall clock, while the lab's world runs on
            # simulated time.
            ttl=dt.timedelta(0),
            schema=[Field(name=entity.join_key, dtype=String), *(_field(f) for f in view.features)],
            source=sources[view.name],
            online=True,
            description=view.description,
            tags={"world": view.world, "written_by": view.written_by},
        )

    request_sources: dict[str, RequestSource] = {}
    on_demand: dict[str, OnDemandFeatureView] = {}
    for spec in ON_DEMAND.values():
        request_sources[spec.name] = RequestSource(
            name=f"{spec.name}_request",
            schema=[_field(f) for f in spec.request],
            description=f"What the request carries for {spec.name}.",
        )
        decorate = on_demand_feature_view(
            name=spec.name,
            sources=[*(views[v] for v in spec.sources), request_sources[spec.name]],
            # Without descriptions: Feast checks the declared schema against one it infers by
            # running the function, field for field, descriptions included.
            schema=[Field(name=f.name, dtype=FEAST_TYPES[f.dtype]) for f in spec.features],
            mode="python",
            description=spec.description,
            tags={"world": spec.world},
        )
        on_demand[spec.name] = decorate(_fresh_copy(TRANSFORMATIONS[spec.name]))

    services = {
        s.name: FeatureService(
            name=s.name,
            features=[
                *(views[v][[f.name for f in VIEWS[v].served]] for v in s.views),
                *(on_demand[o] for o in s.on_demand),
            ],
            description=s.description,
            tags={"world": s.world},
        )
        for s in SERVICES.values()
    }
    return Definitions(entities, sources, request_sources, views, on_demand, services)
