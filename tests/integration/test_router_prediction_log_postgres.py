"""The prediction log's contract against a real PostgreSQL server (a throwaway cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsd.netutil import free_port
from mlsd.settings import PostgresPredictionLogSettings
from serving.prediction_log import PostgresPredictionLog, PredictionLog
from tests.support.system_services import service_missing
from tests.unit.test_prediction_log import OpenLog, PredictionLogContract

pytestmark = pytest.mark.integration


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary directory on a free port; yields a superuser DSN."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        service_missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # The server refuses to run as root: run it as the postgres user when we are root.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            service_missing("running as root without runuser: cannot start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="mlsd-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
    port = free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "mlsd", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://mlsd@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


class TestPostgresPredictionLog(PredictionLogContract):
    @pytest.fixture
    def open_log(self, postgres_dsn: str) -> OpenLog:
        import asyncio

        import asyncpg

        # A fresh database per test: the contract assumes an empty log.
        name = f"log_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(postgres_dsn)
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"

        async def opener() -> PredictionLog:
            return await PostgresPredictionLog(PostgresPredictionLogSettings(dsn=dsn)).open()

        return opener
