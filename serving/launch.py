"""How a model server is started: its command line, importable without KServe, Feast or MLflow
(importing `serving.model_server` takes seconds; the supervisor only needs this)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlsd.settings import Settings
from serving.names import Product


def model_server_argv(
    product: Product, settings: Settings, versions: Sequence[str] = (), shadow: bool = False
) -> list[str]:
    """`python -m serving.model_server ...` for `product` on its configured ports (`shadow`:
    its shadow server's); without `versions` the server serves the version @champion points at
    when it starts (a shadow server too: the router loads the shadowed version beside it; it
    runs at a lower CPU priority: shadow_priority_args)."""
    http, grpc = settings.model_servers.product(product).ports(shadow)
    argv = [sys.executable, "-m", "serving.model_server", "--product", product]
    if versions:
        argv += ["--versions", *versions]
    argv += ["--http-port", str(http), "--grpc-port", str(grpc)]
    if shadow:
        argv += shadow_priority_args(settings)
    return argv


def shadow_priority_args(settings: Settings) -> list[str]:
    """The model server's options that lower a shadow server's CPU priority."""
    servers = settings.model_servers
    args = ["--nice", str(servers.shadow_nice)]
    if servers.shadow_sched_idle:
        args.append("--sched-idle")
    return args


def model_server_health_url(product: Product, settings: Settings, shadow: bool = False) -> str:
    """Answers 200 once the server listens, which it does only after its versions loaded."""
    return f"{settings.model_server_url(product, shadow)}/v2/health/ready"
