"""A small real lab for integration tests of serving: both worlds simulated and ingested, features
built and materialised, and both models trained by their Prefect flows into a real MLflow."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlsd.settings import Settings
from mlsd.telemetry import QUIET_LIBRARIES

# Small worlds and short training windows: big enough for the flows' data checks and gates to
# run for real, small enough to build in about a minute on 2 cores. Ingest costs ~0.3 s per daily
# batch (Great Expectations), whatever its size, so the lab has few days of many cards.
SMALL_WORLD_ENV: dict[str, str] = {
    "MLSD_SIMULATOR__DAYS": "21",
    "MLSD_SIMULATOR__FRAUD__N_CARDS": "1200",
    "MLSD_SIMULATOR__FRAUD__N_MERCHANTS": "150",
    "MLSD_SIMULATOR__RECSYS__N_USERS": "400",
    "MLSD_SIMULATOR__RECSYS__N_ITEMS": "300",
    "MLSD_SIMULATOR__RECSYS__NEW_USERS_PER_DAY": "3",
    "MLSD_SIMULATOR__RECSYS__NEW_ITEMS_PER_DAY": "3",
    "MLSD_TRAINING__FRAUD__LABEL_MATURITY_DAYS": "5",
    "MLSD_TRAINING__FRAUD__CALIBRATE_DAYS": "3",
    "MLSD_TRAINING__FRAUD__VALIDATE_DAYS": "4",
    "MLSD_TRAINING__RECSYS__RANKER_DAYS": "4",
    "MLSD_TRAINING__RECSYS__VALIDATE_DAYS": "4",
    "MLSD_TRAINING__RECSYS__EVAL_USERS": "100",
    "MLSD_TRAINING__RECSYS__ALS_ITERATIONS": "5",
    # A small world's day lands in a few seconds, so its clock may run at twice the default's
    # pace (sized for the demo's world): the loop's labels and landed days come sooner.
    "MLSD_WORLD__SECONDS_PER_DAY": "20",
}


@dataclass(frozen=True)
class Lab:
    """What the fixture built: where it lives, the registry it trained into, what it registered."""

    settings: Settings
    tracking_uri: str
    # Everything a server process of this lab needs in its environment (MLSD_* settings, the
    # registry's names, MLFLOW_TRACKING_URI, the libraries quiet): pass it to subprocesses.
    env: dict[str, str]
    fraud_versions: tuple[str, ...]  # registered versions of settings.training.fraud_model_name
    recsys_versions: tuple[str, ...]
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # time per build step

    @property
    def fraud_model_name(self) -> str:
        return self.settings.training.fraud_model_name

    @property
    def recsys_model_name(self) -> str:
        return self.settings.training.recsys_model_name


def lab_env(data_dir: Path, tracking_uri: str, suffix: str) -> dict[str, str]:
    """The environment of a lab under `data_dir` whose models register as `fraud_<suffix>` and
    `recsys_<suffix>` (unique names: the MLflow server is shared by the whole session)."""
    return {
        **QUIET_LIBRARIES,
        **SMALL_WORLD_ENV,
        "MLSD_DATA_DIR": str(data_dir.resolve()),
        "MLSD_TRAINING__FRAUD_MODEL_NAME": f"fraud_{suffix}",
        "MLSD_TRAINING__RECSYS_MODEL_NAME": f"recsys_{suffix}",
        "MLFLOW_TRACKING_URI": tracking_uri,
    }


def build_lab(tracking_uri: str, env: dict[str, str]) -> Lab:
    """Build the lab that `env` (already set in this process) describes, see `lab_env`: its
    data (`tests.support.lab_recipe.build_data`), then fraud v1 and v2 and recsys v1
    (`tests.support.lab_recipe.train_versions`: the first version of each is @champion)."""
    from tests.support.lab_recipe import build_data, train_versions

    settings = Settings()
    data = build_data(settings)
    rejected = [b for b in data.ingest.batches if not b.accepted]
    assert not rejected, f"batches quarantined while building the lab: {rejected}"
    started = time.perf_counter()
    outcomes = train_versions(settings, tracking_uri)
    seconds = {**data.seconds, "train": time.perf_counter() - started}
    return Lab(
        settings=settings,
        tracking_uri=tracking_uri,
        env=dict(env),
        fraud_versions=tuple(str(o["version"]) for o in outcomes["fraud"]),
        recsys_versions=tuple(str(o["version"]) for o in outcomes["recsys"]),
        outcomes=outcomes,
        seconds={step: round(s, 1) for step, s in seconds.items()},
    )


@pytest.fixture(scope="session")
def trained_lab(
    mlflow_server: str, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """A small lab with registered models: fraud v1 (older data) and v2 (retrained), recsys v1.

    For the session, the environment describes the lab (``MLSD_DATA_DIR``, the small world, the
    registry's model names), so ``Settings()`` anywhere in the test process, and any server
    started with ``lab.env``, sees it. Restored afterwards.
    """
    data_dir = tmp_path_factory.mktemp("trained-lab")
    env = lab_env(data_dir, mlflow_server, uuid.uuid4().hex[:8])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield build_lab(mlflow_server, env)
