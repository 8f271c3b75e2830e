"""`python -m serving.router`: the router's command line (see `main`)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from mlsd.settings import get_settings
from serving.admin import admin_token
from serving.router.http_app import create_app

DESCRIPTION = (
    "The serving router: the public scoring API in front of the model servers, the admin API "
    "that\nrollouts drive (split, shadow, canary, promote, rollback), and its entry point."
)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.router`: serve on bind_host:router.port (settings, or the flags)."""
    from mlsd.telemetry import quiet_libraries

    quiet_libraries()
    # Registry calls run on threads with the router's own budget; MLflow's defaults (7 retries,
    # 120 s each) would keep a thread busy for minutes after the router gave up on it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    parser = argparse.ArgumentParser(prog="python -m serving.router", description=DESCRIPTION)
    parser.add_argument("--host", help="Bind address (default: settings bind_host).")
    parser.add_argument("--port", type=int, help="Port (default: settings router.port).")
    parser.add_argument(
        "--print-admin-token",
        action="store_true",
        help="Print the admin token (creating it if needed) and exit.",
    )
    parser.add_argument("--access-log", action="store_true", help="Log every request.")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.print_admin_token:
        print(admin_token(settings))
        return 0
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.bind_host,
        port=args.port or settings.router.port,
        access_log=args.access_log,
        log_level="info",
        # SIGTERM: stop accepting, finish requests in flight, then the lifespan's shutdown
        # writes every queued log row. Bounded, so a stuck client cannot hold the stop forever.
        timeout_graceful_shutdown=10,
    )
    return 0
