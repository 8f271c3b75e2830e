"""The serving router: the public scoring API in front of the model servers, the admin API that
rollouts drive (split, shadow, canary, promote, rollback), and its entry point.

Its rooms: `core` (a request routed, answered, logged, shadowed; the Router and its life
cycle), `servers` (the model servers, their breakers, what they host), `discovery` (registry
aliases, the popularity list), `shadow_copies`, `mapping` (requests to model inputs, answers to
log rows), `control` (what the admin API does to routing), `http_app` (FastAPI, fast lane, body
limit), `dependencies`, `public_routes`, `admin_routes`, `entry` (`python -m serving.router`).
The names other code uses are importable from here.
"""

from serving.router.admin_routes import add_admin_routes
from serving.router.control import RoutingControl
from serving.router.core import DISCOVERY_EVERY_S, Router
from serving.router.dependencies import RouterDep, get_router, require_admin
from serving.router.discovery import (
    POPULARITY_PROBE_USER,
    PopularityRefresh,
    RegistryLink,
    registry_uri,
)
from serving.router.entry import main
from serving.router.http_app import BodySizeLimit, RouterApp, create_app, validation_error
from serving.router.mapping import (
    fraud_columns,
    fraud_decision,
    logged_outcome,
    recs_columns,
    recs_path,
)
from serving.router.public_routes import add_public_routes
from serving.router.servers import PROBE_TIMEOUT_S, ModelServers
from serving.router.shadow_copies import ShadowCopies, ShadowJob

__all__ = [
    "DISCOVERY_EVERY_S",
    "POPULARITY_PROBE_USER",
    "PROBE_TIMEOUT_S",
    "BodySizeLimit",
    "ModelServers",
    "PopularityRefresh",
    "RegistryLink",
    "Router",
    "RouterApp",
    "RouterDep",
    "RoutingControl",
    "ShadowCopies",
    "ShadowJob",
    "add_admin_routes",
    "add_public_routes",
    "create_app",
    "fraud_columns",
    "fraud_decision",
    "get_router",
    "logged_outcome",
    "main",
    "recs_columns",
    "recs_path",
    "registry_uri",
    "require_admin",
    "validation_error",
]
