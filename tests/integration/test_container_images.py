"""The project's image, built here and run as the Kubernetes manifests run it: the same command
lines (taken from the rendered kind overlay), the same non-root user, a read-only root
filesystem with a tmpfs at /tmp, no capabilities, no privilege escalation. The model servers and
the router in containers then answer health checks and a scoring request, the router calling
the fraud server's container, which reads its version from a real MLflow.

It lives beside the other integration tests to share their trained lab (one per session); the
engine, base image and build are in tests/infra/docker_engine.py. Skipped, with the reason, only
where Docker cannot be installed; under CI=true that fails instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlsd.netutil import free_port
from mlsd.registry import CHAMPION, ModelRegistry
from tests.infra import docker_engine as de
from tests.infra import manifest_checks as mc
from tests.integration.lab import Lab

pytestmark = pytest.mark.integration

TOKEN = "container-test-token"


@pytest.fixture(scope="module")
def engine() -> Iterator[de.Engine]:
    reason = de.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the container test: {reason}")
        pytest.skip(reason)
    with de.running_engine() as running:
        yield running


@pytest.fixture(scope="module")
def image(engine: de.Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    de.ensure_base_image(engine)
    de.build_project_image(engine, tmp_path_factory.mktemp("build") / "build.log")
    return de.PROJECT_IMAGE


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return mc.render(mc.K8S_DIR / "overlays" / "kind")


def manifest_container(objs: list[dict[str, Any]], kind: str, name: str) -> tuple[dict, dict]:
    """(container, pod securityContext) of the object's main container."""
    obj = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    pod = (
        obj["spec"]["predictor"] if kind == "InferenceService" else obj["spec"]["template"]["spec"]
    )
    return pod["containers"][0], pod.get("securityContext") or {}


def run_options(container: dict, pod_sc: dict, data_dir: Path, env: dict[str, str]) -> list[str]:
    """`docker run` options that do what the manifest's securityContext and volumes say."""
    sc = container.get("securityContext") or {}
    user = sc.get("runAsUser", pod_sc["runAsUser"])
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup", user))
    options = ["--network", "host", "--user", f"{user}:{group}"]
    if sc.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--tmpfs", "/tmp:rw,mode=1777"]
    options += [f"--cap-drop={c}" for c in (sc.get("capabilities") or {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    # The lab's data volume, where the manifests mount lab-data.
    options += ["-v", f"{data_dir}:{data_dir}"]
    for key, value in env.items():
        options += ["-e", f"{key}={value}"]
    return options


def with_ports(argv: list[str], http: int, grpc: int) -> list[str]:
    """The manifest's command line with its ports moved to free ones (a shared machine)."""
    out = list(argv)
    out[out.index("--http-port") + 1] = str(http)
    out[out.index("--grpc-port") + 1] = str(grpc)
    return out


def wait_healthy(engine: de.Engine, name: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        state = engine.docker(
            "inspect", "-f", "{{.State.Running}}", name, check=False
        ).stdout.strip()
        if state == "false":
            break
        time.sleep(1)
    logs = engine.docker("logs", "--tail", "60", name, check=False)
    raise AssertionError(f"{name} not healthy at {url}:\n{logs.stdout}\n{logs.stderr}")


@pytest.fixture(scope="module")
def shared_lab_dir(trained_lab: Lab) -> Iterator[Path]:
    """A copy of the lab's data directory that the containers' user (10001) may read and write
    (pytest's own temporary directories are private to root)."""
    top = Path(tempfile.mkdtemp(prefix="mlsd-container-lab-", dir="/tmp"))
    top.chmod(0o777)
    copy = top / "lab"
    shutil.copytree(
        trained_lab.settings.data_dir, copy, ignore=shutil.ignore_patterns("logs", "run")
    )
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    yield copy
    shutil.rmtree(top, ignore_errors=True)


def test_the_router_and_model_servers_run_in_containers_as_the_manifests_run_them(
    engine: de.Engine,
    image: str,
    manifests: list[dict[str, Any]],
    trained_lab: Lab,
    shared_lab_dir: Path,
) -> None:
    env = {
        **trained_lab.env,
        "MLSD_DATA_DIR": str(shared_lab_dir),
        "MLSD_BIND_HOST": "127.0.0.1",
        "HOME": "/tmp",
        "PREFECT_HOME": "/tmp/prefect",
    }
    started: list[str] = []
    try:
        upstreams = {}
        for product in ("fraud", "recsys"):
            container, pod_sc = manifest_container(manifests, "InferenceService", product)
            http, grpc = free_port(), free_port()
            name = f"mlsd-ci-{product}-{http}"
            argv = with_ports([*container["command"], *container["args"]], http, grpc)
            de.run_detached(engine, name, run_options(container, pod_sc, shared_lab_dir, env), argv)
            started.append(name)
            upstreams[product] = f"http://127.0.0.1:{http}"
        for product, name in zip(("fraud", "recsys"), started, strict=True):
            wait_healthy(engine, name, f"{upstreams[product]}/v2/health/ready")

        container, pod_sc = manifest_container(manifests, "Deployment", "router")
        port = free_port()
        router_env = {
            **env,
            "MLSD_ROUTER__PORT": str(port),
            "MLSD_ROUTER__FRAUD_UPSTREAM": upstreams["fraud"],
            "MLSD_ROUTER__RECSYS_UPSTREAM": upstreams["recsys"],
            "MLSD_ROUTER__ADMIN_TOKEN": TOKEN,
        }
        name = f"mlsd-ci-router-{port}"
        de.run_detached(
            engine,
            name,
            run_options(container, pod_sc, shared_lab_dir, router_env),
            container["command"],
        )
        started.append(name)
        router = f"http://127.0.0.1:{port}"
        wait_healthy(engine, name, f"{router}/readyz")

        # The processes run as the manifests' user, on a root filesystem they cannot write.
        assert engine.docker("exec", name, "id", "-u").stdout.strip() == "10001"
        assert engine.docker("exec", name, "touch", "/app/x", check=False).returncode != 0

        champion = ModelRegistry(trained_lab.tracking_uri).version_of(
            trained_lab.fraud_model_name, CHAMPION
        )
        answer = httpx.post(
            f"{router}/v1/fraud/score",
            json={
                "card_id": "c_0001",
                "merchant_id": "m_0007",
                "amount": 42.0,
                "country": "GB",
                "device_id": "dev_9",
                "timestamp": "2026-03-01T08:30:00Z",
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # The model in the fraud server's container answered, not a fallback of the router's.
        assert body["model_version"] == f"fraud/{champion}", body
        assert 0.0 <= body["score"] <= 1.0
    finally:
        for name in started:
            engine.docker("rm", "--force", name, check=False)
