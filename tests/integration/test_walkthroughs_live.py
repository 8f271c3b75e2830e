"""CI runs every walkthrough against a real local stack: `mlsd up` (MLflow, Prefect, the flows),
a small lab simulated, gated, featurised and trained by its real flows, `mlsd up` again for the
model servers and the router, then `mlsd walk --all --auto`: every step of every walkthrough
runs and meets its expectation, and every figure the walkthroughs show is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsd.netutil import free_port
from mlsd.telemetry import QUIET_LIBRARIES
from mlsd.walk.document import parse_walkthrough, walkthrough_paths
from tests.integration.lab import SMALL_WORLD_ENV

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mlsd.cli"]
BUILD = (
    "from mlsd.settings import Settings\n"
    "from tests.support.lab_recipe import build_data, train_versions\n"
    "s = Settings()\n"
    "build_data(s)\n"
    "out = train_versions(s, s.mlflow_tracking_uri)\n"
    "print({p: [o.get('version') for o in v] for p, v in out.items()})\n"
)


def lab_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSD_", "PREFECT_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(QUIET_LIBRARIES)
    env.update(SMALL_WORLD_ENV)
    ports = {
        "MLSD_MLFLOW__PORT": free_port(),
        "MLSD_PREFECT__PORT": free_port(),
        "MLSD_ROUTER__PORT": free_port(),
        "MLSD_MONITORING__EVIDENTLY_PORT": free_port(),
    }
    for product, timeout_ms in (("FRAUD", 50), ("RECSYS", 250)):
        prefix = f"MLSD_MODEL_SERVERS__{product}__"
        ports |= {f"{prefix}HTTP_PORT": free_port(), f"{prefix}GRPC_PORT": free_port()}
        env[f"{prefix}TIMEOUT_MS"] = str(timeout_ms)
    ports |= {
        "MLSD_MODEL_SERVERS__FRAUD__SHADOW_HTTP_PORT": free_port(),
        "MLSD_MODEL_SERVERS__FRAUD__SHADOW_GRPC_PORT": free_port(),
    }
    env.update({k: str(v) for k, v in ports.items()})
    env.update(
        MLSD_DATA_DIR=str(data_dir),
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{ports['MLSD_MLFLOW__PORT']}",
        PREFECT_API_URL=f"http://127.0.0.1:{ports['MLSD_PREFECT__PORT']}/api",
        # CI shares 2 cores with the whole suite: a model budget the servers meet when busy
        # (the 50 ms default is for a quiet machine); a dead server still falls back at once.
        MLSD_ROUTER__MODEL_TIMEOUT_MS="1000",
        # The world's clock would land a day every 20 s, and the loop would judge, retrain and
        # roll out on its own while the steps run: hold the world still, so every figure is
        # one a step caused (the loop has its own end-to-end test).
        MLSD_WORLD__LAND_DAYS="false",
        # Walkthroughs 03 and 10 judge the windows they send with the monitor flow, and its
        # trigger may ask for a retrain (in a person's lab it should); here a retrain would
        # race the later walkthroughs' steps: no M of N is reached (5 of 5 windows with a
        # signal), so the trigger still decides, out loud, and never retrains.
        MLSD_MONITORING__TRIGGER__M="5",
        MLSD_MONITORING__TRIGGER__N="5",
        COLUMNS="200",
    )
    return env


def run(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("walk") / ".mlsd"
    env = lab_env(data_dir)
    try:
        for args, timeout in (
            # The flows (and the rollout deployment that reacts to a registered challenger)
            # start only after the lab is trained: a rollout of the lab's own challenger,
            # started by itself, would race the walkthroughs' steps.
            ((*CLI, "up", "--only", "mlflow", "--only", "prefect"), 600),
            ((sys.executable, "-c", BUILD), 1200),
            ((*CLI, "up"), 600),
        ):
            started = time.monotonic()
            done = run(env, *args, timeout=timeout)
            print(f"{' '.join(args[-3:])}: {time.monotonic() - started:.0f} s")
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        yield env
    finally:
        run(env, *CLI, "down", timeout=120)


def test_every_walkthrough_runs_against_the_live_stack(live_lab: dict[str, str]):
    started = time.monotonic()
    done = run(live_lab, *CLI, "walk", "--all", "--auto", timeout=1800)
    seconds = time.monotonic() - started
    print(f"mlsd walk --all --auto: {seconds:.0f} s")
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-4000:]
    data_dir = Path(live_lab["MLSD_DATA_DIR"])
    for path in walkthrough_paths(REPO / "walkthroughs"):
        doc = parse_walkthrough(path)
        results = json.loads((data_dir / "walk" / f"{doc.number}.json").read_text())
        shown = {n for n in doc.placeholders() if not n.startswith("bench:")}
        assert shown <= set(results["values"]), (path.name, shown - set(results["values"]))
    assert "(not measured yet" not in done.stdout
