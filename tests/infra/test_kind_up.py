"""`make kind-up` cannot run on these machines (no kind, no registry): what can be tested is its
prerequisite checks and its dry run, which prints every step and runs none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIND_UP = ROOT / "scripts" / "kind-up.sh"
KIND_DOWN = ROOT / "scripts" / "kind-down.sh"


def fake_path(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding the shell's basics and, of docker/kind/kubectl, only `tools` (each a stub
    that succeeds), so a test decides what the machine has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for basic in ("bash", "sed", "head", "od", "tr", "printf", "cat", "grep", "dirname", "seq"):
        found = shutil.which(basic)
        if found:
            (bin_dir / basic).symlink_to(found)
    for tool in tools:
        stub = bin_dir / tool
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return str(bin_dir)


def run_script(script: Path, path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(script), *args],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("missing", ["docker", "kind", "kubectl"])
def test_each_missing_prerequisite_is_named_with_where_to_get_it(
    tmp_path: Path, missing: str
) -> None:
    present = [t for t in ("docker", "kind", "kubectl") if t != missing]
    result = run_script(KIND_UP, fake_path(tmp_path, present))
    assert result.returncode == 1
    assert f"missing: {missing}" in result.stderr
    assert "https://" in result.stderr.split(f"missing: {missing}")[1].splitlines()[0]
    # Only what is missing is reported, and nothing was attempted.
    assert [t for t in present if f"missing: {t}" in result.stderr] == []
    assert "kind create cluster" not in result.stdout


def test_all_missing_prerequisites_are_named_at_once(tmp_path: Path) -> None:
    result = run_script(KIND_UP, fake_path(tmp_path, []))
    assert result.returncode == 1
    for tool in ("docker", "kind", "kubectl"):
        assert f"missing: {tool}" in result.stderr


def test_an_engine_that_does_not_answer_is_told_apart_from_a_missing_one(tmp_path: Path) -> None:
    path = fake_path(tmp_path, ["kind", "kubectl"])
    docker = Path(path) / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")  # `docker info` fails: the daemon is down
    docker.chmod(0o755)
    result = run_script(KIND_UP, path)
    assert result.returncode == 1
    assert "engine does not answer" in result.stderr
    assert "missing: docker" not in result.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_dry_run_prints_every_step_and_runs_none(tmp_path: Path, how: str) -> None:
    # The stubs would fail if called: a dry run must not call them.
    path = fake_path(tmp_path, [])
    for tool in ("docker", "kind", "kubectl"):
        stub = Path(path) / tool
        stub.write_text(f"#!/bin/sh\necho {tool} was called >&2\nexit 3\n")
        stub.chmod(0o755)
    result = (
        run_script(KIND_UP, path, "--dry-run")
        if how == "flag"
        else run_script(KIND_UP, path, DRY_RUN="1")
    )
    assert result.returncode == 0, result.stderr
    assert "was called" not in result.stderr
    out = result.stdout
    steps = re.findall(r"^==> (\d)/9", out, re.MULTILINE)
    assert steps == [str(i) for i in range(1, 10)]
    for expected in (
        "kind create cluster --name mlsd-lab --config",
        "cert-manager/releases/download/v",
        "kserve/releases/download/v",
        "defaultDeploymentMode",
        "docker build -t mlsd-lab:",
        "kind load docker-image mlsd-lab:",
        "create secret generic mlsd-postgres",
        "kubectl apply -k",
        "wait --for=condition=complete job/mlsd-bootstrap",
        "wait --for=condition=Ready inferenceservice --all",
        "rollout status deployment/world",
        "port-forward svc/world 8090:8090",
        "/v1/fraud/score",
        "port-forward svc/mlflow 5000:5000",
        "port-forward svc/prefect 4200:4200",
    ):
        assert expected in out, expected
    # The image it builds is the one the manifests run.
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert f"docker build -t mlsd-lab:{version[1]} " in out
    overlay = (ROOT / "infra/k8s/overlays/kind/kustomization.yaml").read_text()
    assert f"newTag: {version[1]}" in overlay


def test_kind_down_dry_run_and_missing_kind(tmp_path: Path) -> None:
    result = run_script(KIND_DOWN, fake_path(tmp_path, ["kind"]), "--dry-run")
    assert result.returncode == 0
    assert "kind delete cluster --name mlsd-lab" in result.stdout
    missing = run_script(KIND_DOWN, fake_path(tmp_path / "other", []))
    assert missing.returncode == 1 and "missing: kind" in missing.stderr


def test_the_makefile_has_the_kind_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^kind-up:.*## ", makefile, re.MULTILINE)
    assert re.search(r"^kind-down:.*## ", makefile, re.MULTILINE)
    assert "scripts/kind-up.sh" in makefile and "scripts/kind-down.sh" in makefile
