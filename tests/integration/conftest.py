"""Real servers for integration tests, each started at most once per session: MLflow and Prefect."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import pytest


def _empty_mlflow_db(config: pytest.Config) -> Path | None:
    """Where an empty, migrated MLflow database of this MLflow version is kept (None: no cache)."""
    cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`
    if cache is None:
        return None
    return Path(cache.mkdir(f"mlflow-empty-db-{version('mlflow')}")) / "mlflow.db"


def _sqlite_copy(source: Path, target: Path) -> None:
    # The backup API copies a consistent database even while the server holds it open;
    # the rename makes the template appear whole to a concurrent session.
    partial = target.with_suffix(f".{os.getpid()}.partial")
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
        src.backup(dst)
    os.replace(partial, target)


@pytest.fixture(scope="session")
def mlflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real MLflow server (SQLite, proxied artifacts, a tmp directory); yields its tracking URI.

    Started by the stack supervisor, the same way `mlsd up` starts it. For the session,
    MLFLOW_TRACKING_URI points at it (so `MlflowClient()` and `mlflow.start_run()` use it) and
    MLSD_MLFLOW__PORT matches it (so `Settings().mlflow_tracking_uri` does too); both are
    restored afterwards. The server is shared: give experiments and models unique names.

    The first session keeps a copy of the freshly migrated, empty database in pytest's cache
    (per MLflow version); later sessions start from it and skip ~10 s of migrations.
    """
    from mlsd.netutil import free_port
    from mlsd.settings import MlflowSettings, Settings
    from mlsd.stack import Supervisor
    from mlsd.stack.services import mlflow_component

    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("mlflow-server"), mlflow=MlflowSettings(port=port)
    )
    db = settings.mlflow_dir / "mlflow.db"
    template = _empty_mlflow_db(request.config)
    if template is not None and template.is_file():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, db)
    supervisor = Supervisor.from_settings(settings)
    supervisor.start([mlflow_component(settings)])
    try:
        if template is not None and not template.is_file():
            _sqlite_copy(db, template)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
            mp.setenv("MLSD_MLFLOW__PORT", str(port))
            yield settings.mlflow_tracking_uri
    finally:
        supervisor.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A temporary Prefect API on SQLite (`prefect_test_harness`); yields its API URL.

    Flows run in the test process report to it. For the session, PREFECT_API_URL (for
    subprocesses and the `prefect` CLI), MLSD_PREFECT__PORT (for `Settings().prefect_api_url`)
    and PREFECT_HOME (a tmp directory, never ~/.prefect) are set, and restored afterwards.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        # The environment only counts if prefect was not imported yet; this covers the rest.
        # The harness's default 30 s start timeout is too tight on a busy 2-core machine.
        with (
            temporary_settings(updates={PREFECT_HOME: home}),
            prefect_test_harness(server_startup_timeout=120),
        ):
            api_url = str(PREFECT_API_URL.value())
            mp.setenv("PREFECT_API_URL", api_url)
            mp.setenv("MLSD_PREFECT__PORT", str(urlsplit(api_url).port))
            yield api_url


from tests.integration.lab import trained_lab  # noqa: E402, F401  (shared with the router's tests)
