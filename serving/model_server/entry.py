"""`python -m serving.model_server`: one product's model server (see `main`)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from mlsd.cpu import lower_cpu_priority
from mlsd.settings import Settings
from mlsd.telemetry import quiet_libraries
from serving.inference import limit_native_threads
from serving.model_server.models import load_pinned_model
from serving.model_server.repository import VersionRepository
from serving.model_server.server import LabModelServer
from serving.names import PRODUCTS, Product

# KServe reads its own flags from sys.argv when imported (`parse_known_args`, prefix matching
# included). None of the flags of `parse_args` is a prefix of one of KServe's, so they pass by.

# KServe configures its own logger (format, level); the lab's server lines go to the same place.
logger = logging.getLogger("kserve")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description="Serve pinned registry versions of one product over KServe V1/V2.",
    )
    parser.add_argument("--product", required=True, choices=PRODUCTS)
    parser.add_argument(
        "--versions",
        nargs="*",
        default=[],
        metavar="N",
        help="Registry versions to load at start [default: the version @champion points at].",
    )
    parser.add_argument(
        "--http-port", type=int, help="REST port [default: model_servers.<product>.http_port]."
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port, used when model_servers.grpc_enabled [default: settings].",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow server of the registry [default: MLFLOW_TRACKING_URI, else the lab's MLflow].",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="0-19",
        help="Lower this server's CPU priority by this much (a shadow server: "
        "model_servers.shadow_nice) [default: 0].",
    )
    parser.add_argument(
        "--sched-idle",
        action="store_true",
        help="Run under Linux's SCHED_IDLE policy: a core only when no other task wants it (a "
        "shadow server: model_servers.shadow_sched_idle).",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    quiet_libraries()
    args = parse_args(argv)  # before the imports limit_native_threads makes: --help stays quick
    # Versions are read in a child process that exits (serving.inference.startup.in_child), so
    # this one keeps none of MLflow, skops, and, for fraud (onnxruntime scores), scikit-learn.
    # Not at a lowered CPU priority (a shadow server): the child would inherit it, and on a busy
    # machine waited 10-20 s for a core to read a challenger, on a rollout's critical path (in
    # process, 0.2 s: the libraries are there); that server keeps them instead (about 0.1 GB).
    isolated = not (args.nice or args.sched_idle)
    limit_native_threads(load_scikit_learn=args.product != "fraud" or not isolated)
    if args.nice or args.sched_idle:
        # Before the server's own threads start: they inherit it.
        lower_cpu_priority(args.nice, idle=args.sched_idle)
    settings = Settings()
    product: Product = args.product
    ports = settings.model_servers.product(product)
    tracking_uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_tracking_uri
    )
    versions: list[str | None] = list(args.versions) or [None]  # None: @champion's version
    server = LabModelServer(
        bind_host=settings.bind_host,
        access_log=settings.model_servers.access_log,
        http_port=args.http_port or ports.http_port,
        grpc_port=args.grpc_port or ports.grpc_port,
        enable_grpc=settings.model_servers.grpc_enabled,
        enable_latency_logging=settings.model_servers.access_log,
        registered_models=VersionRepository(product, settings, tracking_uri, isolated),
        workers=1,
    )
    models = [
        load_pinned_model(product, version, settings, tracking_uri, isolated)
        for version in versions
    ]
    logger.info("serving %s on %s", ", ".join(m.name for m in models), settings.bind_host)
    server.start(list(models))
