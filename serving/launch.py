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
    runs at model_servers.shadow_nice)."""
    http, grpc = settings.model_servers.product(product).ports(shadow)
    argv = [sys.executable, "-m", "serving.model_server", "--product", product]
    if versions:
        argv += ["--versions", *versions]
    argv += ["--http-port", str(http), "--grpc-port", str(grpc)]
    if shadow and settings.model_servers.shadow_nice:
        argv += ["--nice", str(settings.model_servers.shadow_nice)]
    return argv


def model_server_health_url(product: Product, settings: Settings, shadow: bool = False) -> str:
    """Answers 200 once the server listens, which it does only after its versions loaded."""
    return f"{settings.model_server_url(product, shadow)}/v2/health/ready"
