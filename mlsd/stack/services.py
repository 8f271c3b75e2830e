"""The components of the local stack, built from the settings: MLflow and Prefect so far.

To add a component (a model server, the router), write a builder `settings -> Component` here
and append it to `STACK_BUILDERS` after what it needs; `mlsd up`, `status`, `down` and the
watchdog then handle it with no further change.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlsd.stack.component import Component

if TYPE_CHECKING:
    from mlsd.settings import Settings


def mlflow_component(settings: Settings) -> Component:
    """MLflow tracking server and model registry; artifacts are proxied through the server."""
    host, port = settings.bind_host, settings.mlflow.port
    # --serve-artifacts: clients upload and download over HTTP (mlflow-artifacts:/), so they
    # need no access to the artifact directory, the same as against a remote server.
    # `mlflow server` with its web server in place of the CLI, which otherwise waits beside it
    # holding 0.2 GB (mlsd.stack.mlflow_server).
    argv = (
        sys.executable,
        "-m",
        "mlsd.stack.mlflow_server",
        "--backend-store-uri",
        settings.mlflow_backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(settings.mlflow_artifacts_dir.resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(settings.mlflow.workers),
    )
    return Component(
        name="mlflow",
        argv=argv,
        # Without it the server starts a job runner and 7 consumers: 10 processes, 2.4 GB
        # (shared/STACK.md); with it off, and the launcher above, one process of 0.25 GB.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        log_file=settings.logs_dir.resolve() / "mlflow.log",
        host=host,
        port=port,
        health_url=f"{settings.mlflow_tracking_uri}/health",
        url=settings.mlflow_tracking_uri,
        state_dirs=(settings.mlflow_dir.resolve(), settings.mlflow_artifacts_dir.resolve()),
    )


def prefect_component(settings: Settings) -> Component:
    """Prefect server: API, UI and its background services, on its own PREFECT_HOME."""
    host, port = settings.bind_host, settings.prefect.port
    ui = settings.prefect.ui_enabled
    argv = (
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--ui" if ui else "--no-ui",
        "--analytics-off",
    )
    env = {
        # Its own home, or it writes ~/.prefect/prefect.db and shares profiles with the user.
        "PREFECT_HOME": str(settings.prefect_home.resolve()),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": settings.prefect_database_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        # An ISO 8601 duration: Prefect refuses a bare number of seconds here.
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": (
            f"PT{settings.prefect.schedule_ahead_seconds}S"
        ),
        # The UI calls the API at this address; the server's own clients use it too.
        **settings.prefect_client_env,
    }
    return Component(
        name="prefect",
        argv=argv,
        env=env,
        log_file=settings.logs_dir.resolve() / "prefect.log",
        host=host,
        port=port,
        health_url=f"{settings.prefect_api_url}/health",
        url=settings.prefect_api_url.removesuffix("/api"),
        state_dirs=(settings.prefect_home.resolve(),),
    )


def flows_component(settings: Settings) -> Component:
    """The process that serves every flow of the lab as a Prefect deployment (by name, schedule or
    event; `mlsd.flows`), executing their runs; it needs the Prefect API to register and MLflow to
    log to."""
    return Component(
        name="flows",
        argv=(sys.executable, "-m", "mlsd.flows"),
        env={
            "PREFECT_HOME": str(settings.prefect_home.resolve()),
            **settings.prefect_client_env,
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "MLSD_DATA_DIR": str(settings.data_dir.resolve()),
            "PREFECT_RUNNER_POLL_FREQUENCY": str(settings.prefect.runner_poll_seconds),
        },
        log_file=settings.logs_dir.resolve() / "flows.log",
        host=settings.bind_host,
        depends_on=("mlflow", "prefect"),
    )


def world_component(settings: Settings) -> Component:
    """The simulated world on a clock (`simulator.control`): it lands a raw batch per closed
    simulated day, sends live traffic to the router once `mlsd traffic start` asks, and posts
    late labels; its control API listens on world.port."""
    host, port = settings.bind_host, settings.world.port
    url = settings.world_url
    return Component(
        name="world",
        argv=(sys.executable, "-m", "simulator.control", "--host", host, "--port", str(port)),
        env={
            "PREFECT_HOME": str(settings.prefect_home.resolve()),
            **settings.prefect_client_env,
            "MLSD_DATA_DIR": str(settings.data_dir.resolve()),
        },
        log_file=settings.logs_dir.resolve() / "world.log",
        host=host,
        port=port,
        health_url=f"{url}/healthz",
        url=f"{url}/docs",
        # Its events go to Prefect, and the landing deployment that reacts to them runs in flows.
        depends_on=("prefect", "flows"),
        state_dirs=(settings.world_dir.resolve(),),
    )


def model_server_component(product: str, shadow: bool = False) -> Callable[[Settings], Component]:
    """A KServe model server for one product, loading the version @champion points at; the
    router loads challengers onto it (V2 repository API) when a shadow or canary starts.
    `shadow`: the product's shadow server (model_servers.<product>.shadow_http_port), which
    takes only shadow copies."""

    def build(settings: Settings) -> Component:
        from serving.launch import model_server_argv, model_server_health_url

        name = f"model-{product}-shadow" if shadow else f"model-{product}"
        return Component(
            name=name,
            argv=tuple(model_server_argv(product, settings, shadow=shadow)),  # type: ignore[arg-type]
            env={
                "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
                "MLSD_DATA_DIR": str(settings.data_dir.resolve()),
            },
            log_file=settings.logs_dir.resolve() / f"{name}.log",
            host=settings.bind_host,
            port=settings.model_servers.product(product).ports(shadow)[0],
            health_url=model_server_health_url(product, settings, shadow),  # type: ignore[arg-type]
            url=settings.model_server_url(product, shadow),
            depends_on=("mlflow",),
        )

    return build


def router_component(settings: Settings) -> Component:
    """The router: the public API, traffic policies, prediction log, admin API."""
    url = f"http://{settings.client_host}:{settings.router.port}"
    return Component(
        name="router",
        argv=(sys.executable, "-m", "serving.router"),
        env={
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "MLSD_DATA_DIR": str(settings.data_dir.resolve()),
        },
        log_file=settings.logs_dir.resolve() / "router.log",
        host=settings.bind_host,
        port=settings.router.port,
        health_url=f"{url}/healthz",
        url=f"{url}/docs",
        depends_on=("mlflow",),
    )


# In start order; a component's depends_on must name one listed before it. The core runs with
# no trained model; the serving components need a champion in the registry (see `mlsd up`).
STACK_BUILDERS: list[Callable[[Settings], Component]] = [
    mlflow_component,
    prefect_component,
    flows_component,
    world_component,
]
SERVING_BUILDERS: dict[str, Callable[[Settings], Component]] = {
    "fraud": model_server_component("fraud"),
    "recsys": model_server_component("recsys"),
}


def serving_components(settings: Settings, products: list[str]) -> list[Component]:
    """Model servers of `products` (those with a champion), then the router in front of them."""
    servers = [SERVING_BUILDERS[p](settings) for p in products]
    if not servers:
        return []
    router = router_component(settings)
    router = router.model_copy(update={"depends_on": ("mlflow", *(c.name for c in servers))})
    return [*servers, router]


def shadow_components(settings: Settings, products: list[str]) -> list[Component]:
    """The shadow servers of `products` that the router will send copies to. Started after
    the router, apart: a shadow is best effort, and one that cannot start must not stop the
    servers that answer."""
    return [
        model_server_component(p, shadow=True)(settings)
        for p in products
        if settings.model_servers.product(p).shadow_http_port is not None
        and settings.shadow_server_url(p) == settings.model_server_url(p, shadow=True)
    ]


def stack_components(settings: Settings) -> list[Component]:
    """Every component `mlsd up` starts for these settings."""
    return [build(settings) for build in STACK_BUILDERS]
