"""The router's /docs and /redoc render in a real browser (Debian's headless Chromium) with no
network beyond the router: their scripts come from the installed package, not a CDN. Every
other host name is made unresolvable, so a page that still needed a CDN would stay blank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsd.netutil import free_port
from mlsd.telemetry import QUIET_LIBRARIES
from tests.integration.test_router_process import Proc, _spawn
from tests.support.system_services import service_missing

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:  # skips on a developer's machine, fails in CI (a missing install step)
        service_missing("no headless Chromium (Debian's chromium)")
    return found


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    data_dir = tmp_path_factory.mktemp("docs-lab")
    port = free_port()
    env = {
        **os.environ,
        **QUIET_LIBRARIES,
        "MLSD_DATA_DIR": str(data_dir),
        "MLSD_ROUTER__PORT": str(port),
        "MLSD_ROUTER__REGISTRY_URI": "",  # the docs need no registry or model server
        "MLSD_ROUTER__FRAUD_UPSTREAM": f"http://127.0.0.1:{free_port()}",
        "MLSD_ROUTER__RECSYS_UPSTREAM": f"http://127.0.0.1:{free_port()}",
    }
    proc = _spawn(
        [sys.executable, "-m", "serving.router"],
        env,
        Path(data_dir) / "router.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    try:
        yield proc
    finally:
        proc.stop()


def rendered_dom(url: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            # Only the router resolves: a page that needed a CDN would not render.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_swagger_ui_renders_every_route_offline(router: Proc, tmp_path: Path):
    dom = rendered_dom(f"{router.url}/docs", tmp_path)
    for path in ("/v1/fraud/score", "/v1/recs", "/v1/feedback", "/admin/{product}/canary/start"):
        assert f'data-path="{path}"' in dom, dom[-2000:]


def test_redoc_renders_the_operations_offline(router: Proc, tmp_path: Path):
    dom = rendered_dom(f"{router.url}/redoc", tmp_path)
    assert "/v1/fraud/score" in dom and "Score a card transaction" in dom, dom[-2000:]
