"""The router's published API tells the truth: schemathesis 4 generates requests from the
router's own OpenAPI schema (valid ones and invalid ones, public and admin routes, the admin ones
with the token) and runs every check it has against the real router of a trained lab, in front
of real KServe model servers, the real MLflow registry and the lab's Feast store. A schema-valid
request refused, an invalid one accepted, an undocumented status, a 5xx, a wrong `Allow` header:
each is a failure, and there must be none."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from tests.integration.lab import Lab
from tests.integration.test_router_lab import Servers, servers, start_lab_router  # noqa: F401
from tests.integration.test_router_process import TOKEN

pytestmark = pytest.mark.integration

# Examples per operation and phase: with 18 operations and four phases (examples, coverage,
# fuzzing, stateful) this is about 1,500 cases, about two minutes on 2 cores.
MAX_EXAMPLES = 60
MIN_CASES = 1000


def load_time_limits(router_url: str, settings: Settings, folder: Path) -> Path:
    """A schemathesis config that gives the operations the schema marks as loading a version
    the router's own bound on a load (`--checks all` allows any operation 10 s: a load in a
    child process took 7-10 s on this 2-core machine under the suite's load). Every other
    operation keeps the 10 s."""
    paths = httpx.get(f"{router_url}/openapi.json", timeout=30).json()["paths"]
    loading = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if operation.get("x-mlsd-may-load-version")
    ]
    assert loading, "the schema marks no operation as loading a version"
    config = folder / "schemathesis.toml"
    config.write_text(
        "".join(
            f'[[operations]]\ninclude-name = "{name}"\n'
            f"checks.max_response_time = {settings.router.load_timeout_seconds}\n\n"
            for name in loading
        )
    )
    return config


@pytest.fixture
def registry_restored(trained_lab: Lab) -> Iterator[None]:
    """The admin routes move aliases (promote, rollback): put both models' back afterwards."""
    registry = ModelRegistry(trained_lab.tracking_uri)
    names = (trained_lab.fraud_model_name, trained_lab.recsys_model_name)
    before = {name: registry.aliases(name) for name in names}
    try:
        yield
    finally:
        for name in names:
            for alias in ("champion", "challenger", "previous"):
                if registry.version_of(name, alias) != before[name].get(alias):
                    registry.move_alias(
                        name, alias, before[name].get(alias), "schema test: restore"
                    )


def test_schemathesis_finds_no_failure_in_the_router_api(
    trained_lab: Lab,
    servers: Servers,  # noqa: F811
    registry_restored: None,
    tmp_path: Path,
) -> None:
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    try:
        config = load_time_limits(router.url, trained_lab.settings, tmp_path)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{router.url}/openapi.json",
                "--checks",
                "all",
                "--mode",
                "all",  # positive and negative
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "14",
                "--request-timeout",
                str(trained_lab.settings.router.load_timeout_seconds),
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,  # its own cache folder (.schemathesis) goes there, not in the repo
            env={**trained_lab.env, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
        )
        # A client's mistake is a 4xx naming it, not a 502 from the model server.
        missing = httpx.post(
            f"{router.url}/admin/fraud/canary/start",
            json={"percent": 5, "version": 9999},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
    finally:
        router.stop()
    assert missing.status_code == 404, missing.text
    assert "no version 9999 in the registry" in missing.json()["detail"]
    output = done.stdout + done.stderr
    print(output[-3000:])
    cases = re.search(r"(\d+) generated", output)
    assert cases is not None, output[-3000:]
    assert int(cases.group(1)) >= MIN_CASES, output[-3000:]
    assert done.returncode == 0, output[-20000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert int(selected.group(2)) >= 15  # the public and admin routes are all in the schema
    assert selected.group(1) == selected.group(2) == tested.group(1), output[-3000:]
