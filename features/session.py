"""This process's Feast FeatureStore per settings, and the resolved plans of its services.

Created once and reused: the online hot path pays one dict lookup for its store and plan."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from features.catalog import SERVICES
from features.errors import UnknownFeatureServiceError
from features.feast_config import online_store_in_wal, repo_config
from features.service_plan import ServicePlan, service_plan
from mlsd.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore


class Session:
    """A FeatureStore and the resolved plans of its services, kept for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        from feast import FeatureStore

        self.settings = settings
        # Once per process and store, for every writer and reader: a no-op once it is WAL.
        online_store_in_wal(settings)
        self.store: FeatureStore = FeatureStore(config=repo_config(settings))
        self._plans: dict[str, ServicePlan] = {}

    def plan(self, name: str) -> ServicePlan:
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = self._make_plan(name)
        return plan

    def _make_plan(self, name: str) -> ServicePlan:
        if name not in SERVICES:
            raise UnknownFeatureServiceError(
                f"no feature service {name!r}; known: {', '.join(SERVICES)}"
            )
        try:
            feast_service = self.store.get_feature_service(name)
        except Exception as err:
            raise UnknownFeatureServiceError(
                f"feature service {name!r} is not in the registry at {self.settings.features_dir}: "
                "run `mlsd features apply`"
            ) from err
        transforms = []
        for on_demand in SERVICES[name].on_demand:
            transformation = self.store.get_on_demand_feature_view(on_demand).feature_transformation
            assert transformation is not None and hasattr(transformation, "udf")
            transforms.append(transformation.udf)
        return service_plan(name, feast_service, transforms)


_SESSIONS: dict[int, tuple[Settings, Session]] = {}
_SESSIONS_LOCK = threading.Lock()


def session_for(settings: Settings | None) -> Session:
    """The session for `settings` (default: the process's settings), created on first use."""
    settings = settings or get_settings()
    # Keyed by identity (and holding the settings, so the id is never reused): the hot path
    # pays one dict lookup, not a hash of the whole settings tree.
    entry = _SESSIONS.get(id(settings))
    if entry is None:
        with _SESSIONS_LOCK:
            entry = _SESSIONS.get(id(settings))
            if entry is None:
                entry = _SESSIONS[id(settings)] = (settings, Session(settings))
    return entry[1]


def get_store(settings: Settings | None = None) -> FeatureStore:
    """This process's FeatureStore for `settings` (created once, then reused)."""
    return session_for(settings).store


def reset_stores() -> None:
    """Forget every cached store (after a re-apply from another process, or between tests)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()
