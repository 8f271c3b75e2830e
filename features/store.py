"""The one door to the feature store for training and serving.

Training calls :func:`training_frame`; serving calls :func:`online_features`. Both read the
views of one Feast feature service, run the on-demand functions registered in Feast's registry,
and end in the same finishing step (defaults for what the store does not know, an
``<entity>_unknown`` marker per entity), so a model sees identical features in both; the
consistency tests (tests/integration/test_feature_store.py) hold them to it.

This module only gathers the public names; each lives in the room named for it:

| room | what it holds |
| --- | --- |
| ``feast_config`` | ``feature_store.yaml`` for the settings, the RepoConfig, the repo directory |
| ``apply_materialize`` | ``apply`` (registry, online tables) and ``materialize`` (rows online) |
| ``session`` | this process's FeatureStore and service plans, created once |
| ``service_plan`` | what a service needs from a request and how its answer is finished |
| ``online`` / ``online_cache`` | online reads (one entity, a slate, as columns); the row cache |
| ``offline_join`` | point-in-time training frames (``merge_asof`` or Feast's own join) |
| ``request_time`` / ``errors`` | the one epoch conversion; the errors naming the bad field |
"""

from __future__ import annotations

from features.apply_materialize import ApplyReport, ViewMaterialization, apply, materialize
from features.errors import (
    FeatureRequestError,
    MissingEntityKeyError,
    MissingRequestDataError,
    UnknownFeatureServiceError,
)
from features.feast_config import (
    ENTITY_KEY_SERIALIZATION_VERSION,
    FEAST_REPO_DIR,
    PROFILE_ONLINE_STORE,
    REPO_SETTINGS_FILE,
    feast_config,
    feast_output_silenced,
    online_store_type,
    repo_config,
    settings_of_repo,
    write_repo_files,
)
from features.offline_join import ROW_ID, forget_view_tables, training_frame
from features.online import (
    finish_online,
    online_feature_columns,
    online_features,
    online_features_many,
    online_row,
)
from features.online_cache import OnlineFeatureCache
from features.request_time import epoch_seconds
from features.service_plan import ServicePlan, service_plan
from features.session import get_store, reset_stores

__all__ = [
    "ENTITY_KEY_SERIALIZATION_VERSION",
    "FEAST_REPO_DIR",
    "PROFILE_ONLINE_STORE",
    "REPO_SETTINGS_FILE",
    "ROW_ID",
    "ApplyReport",
    "FeatureRequestError",
    "MissingEntityKeyError",
    "MissingRequestDataError",
    "OnlineFeatureCache",
    "ServicePlan",
    "UnknownFeatureServiceError",
    "ViewMaterialization",
    "apply",
    "epoch_seconds",
    "feast_config",
    "feast_output_silenced",
    "finish_online",
    "forget_view_tables",
    "get_store",
    "materialize",
    "online_feature_columns",
    "online_features",
    "online_features_many",
    "online_row",
    "online_store_type",
    "repo_config",
    "reset_stores",
    "service_plan",
    "settings_of_repo",
    "training_frame",
    "write_repo_files",
]
