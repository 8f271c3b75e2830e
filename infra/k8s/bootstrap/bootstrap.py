"""The cluster's bootstrap steps, run in the project's image (infra/k8s/base/bootstrap.yaml and the
model servers' init container). Every step looks before it acts, so a second run changes nothing.

    python infra/k8s/bootstrap/bootstrap.py all                 # buckets, data, first models, flows
    python infra/k8s/bootstrap/bootstrap.py wait-champion fraud # until fraud has an @champion
    python infra/k8s/bootstrap/bootstrap.py wait-router         # until the router routes both
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Run as a file from the image's working directory (/app): the project's packages are there.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from mlsd.settings import WORLDS, Settings
from mlsd.telemetry import quiet_libraries

WORK_POOL = "mlsd-kubernetes"
BUCKETS = ("mlflow", "landing")


def say(message: str) -> None:
    print(f"[bootstrap] {message}", flush=True)


def ensure_buckets() -> None:
    """MLflow's artifact bucket and the landing bucket in MinIO."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["MLSD_K8S_S3_ENDPOINT"])
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket in have:
            say(f"bucket {bucket}: exists")
        else:
            s3.create_bucket(Bucket=bucket)
            say(f"bucket {bucket}: made")


def champion(settings: Settings, product: str) -> str | None:
    from mlsd.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(os.environ.get("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri))
    return registry.version_of(settings.training.model_name(product), CHAMPION)


def ensure_data_and_models(settings: Settings) -> None:
    """Both worlds simulated, gated and in Feast (online store: Redis), then the first versions
    trained by their Prefect flows (as `mlsd demo` does), unless every product already has an
    @champion; data already in the offline store is kept."""
    from features import store, tables
    from pipeline.ingest import ingest
    from pipeline.train_fraud import train_fraud
    from pipeline.train_recsys import train_recsys
    from simulator import run_simulation

    missing = [p for p in WORLDS if champion(settings, p) is None]
    if not missing:
        say("every product has an @champion: no data or training needed")
        return
    if any(settings.offline_dir.rglob("*.parquet")):
        say(f"offline store at {settings.offline_dir} has data: kept")
    else:
        for world in WORLDS:
            say(f"simulating {settings.simulator.days} days of the {world} world")
            run_simulation(
                settings, world, days=settings.simulator.days, seed=settings.simulator.seed
            )
        report = ingest(settings)
        refused = [b for b in report.batches if not b.accepted]
        say(
            f"quality gate: {len(report.batches) - len(refused)} batches in, {len(refused)} quarantined"
        )
        say("features: tables, Feast apply, materialisation into Redis")
        tables.build(settings)
        store.apply(settings)
        store.materialize(settings)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    if "fraud" in missing:
        # A first model as of three days before the data's end, then a retrain on all of it,
        # which the gate judges against the first: the canary then has a challenger to ramp.
        clock = tables.world_clock(settings, "fraud")
        if clock is None:
            raise RuntimeError("no fraud data to train on")
        for kwargs in ({"as_of": clock - dt.timedelta(days=3), "seed": 0}, {"seed": 1}):
            say_outcome(train_fraud(tracking_uri=tracking_uri, **kwargs))
    if "recsys" in missing:
        say_outcome(train_recsys(seed=0, tracking_uri=tracking_uri))


def say_outcome(outcome: dict) -> None:
    say(
        f"{outcome['model_name']} v{outcome['version']}: {outcome['decision']} "
        f"({'; '.join(outcome['reasons'])})"
    )


def ensure_flows() -> None:
    """The Kubernetes work pool (from the mounted base job template) and every lab deployment in
    it: a retrain, a monitoring window or a rollout step then runs as a Job of its own."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from mlsd.flows import lab_deployments

    template = json.loads(Path(os.environ["MLSD_K8S_WORK_POOL_TEMPLATE"]).read_text())
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(name=WORK_POOL, type="kubernetes", base_job_template=template)
            )
            say(f"work pool {WORK_POOL}: made")
        except ObjectAlreadyExists:
            say(f"work pool {WORK_POOL}: exists")
    for deployment in lab_deployments():
        # No image: the pool's template names the project's image, the one this job runs.
        deployment.apply(work_pool_name=WORK_POOL)
        say(f"deployment {deployment.flow_name}/{deployment.name} -> work pool {WORK_POOL}")


def wait_champion(settings: Settings, product: str, poll_seconds: float = 10.0) -> None:
    started = time.monotonic()
    while (version := champion(settings, product)) is None:
        say(f"{product} has no @champion yet ({time.monotonic() - started:.0f} s): waiting")
        time.sleep(poll_seconds)
    say(f"{product}@champion is version {version}")


def router_not_ready(status_code: int, readyz: Any) -> list[str]:
    """What the world still waits for, from the router's GET /readyz: the router itself, or a
    champion for each product (empty: ready)."""
    if status_code != 200 or not isinstance(readyz, dict):
        return [f"the router (HTTP {status_code})"]
    champions = readyz.get("champions") or {}
    return [f"a {p} champion" for p in WORLDS if champions.get(p) is None]


def wait_router(settings: Settings, poll_seconds: float = 10.0, client: Any = None) -> None:
    """The world's init container: its clock starts once the router routes every product, so
    its first live day follows the bootstrap's data instead of running days ahead of the first
    models. Asked over HTTP, the world's one path to the platform."""
    import httpx

    url = f"{settings.world_router_url}/readyz"
    client = client or httpx.Client(timeout=5.0, trust_env=False)
    started = time.monotonic()
    while True:
        try:
            response = client.get(url)
            missing = router_not_ready(response.status_code, response.json())
        except (httpx.HTTPError, ValueError) as err:
            missing = [f"the router ({type(err).__name__})"]
        if not missing:
            say(f"router at {url} routes {', '.join(WORLDS)}")
            return
        say(f"{url}: waiting for {', '.join(missing)} ({time.monotonic() - started:.0f} s)")
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="bootstrap.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("all", help="buckets, data, first models, flows")
    wait = sub.add_parser("wait-champion", help="block until PRODUCT has an @champion")
    wait.add_argument("product", choices=WORLDS)
    sub.add_parser("wait-router", help="block until the router has a champion for every product")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "wait-champion":
        wait_champion(settings, args.product)
        return 0
    if args.command == "wait-router":
        wait_router(settings)
        return 0
    ensure_buckets()
    ensure_data_and_models(settings)
    ensure_flows()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
