"""How a model server is started: its command line, importable without KServe, Feast or MLflow
(importing `serving.model_server` takes seconds; the supervisor only needs this)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlsd.settings import Settings
from serving.names import Product


def model_server_argv(
    product: Product, settings: Settings, versions: Sequence[str] = ()
) -> list[str]:
    """`python -m serving.model_server ...` for `product` on its configured ports; without
    `versions` the server serves the version @champion points at when it starts."""
    ports = settings.model_servers.product(product)
    argv = [sys.executable, "-m", "serving.model_server", "--product", product]
    if versions:
        argv += ["--versions", *versions]
    return [*argv, "--http-port", str(ports.http_port), "--grpc-port", str(ports.grpc_port)]


def model_server_health_url(product: Product, settings: Settings) -> str:
    """Answers 200 once the server listens, which it does only after its versions loaded."""
    return f"{settings.model_server_url(product)}/v2/health/ready"
