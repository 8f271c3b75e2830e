"""The `mlsd` command line: fast to start, and each command does what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mlsd.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_help_does_not_import_heavy_libraries():
    # `mlsd --help` must answer fast: it may not pull in the ML stack at start-up.
    code = (
        "import sys; from mlsd.cli import app; "
        "heavy = [m for m in ('mlflow','feast','great_expectations','evidently','prefect','kserve','sklearn','pandas') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"


def test_config_show_prints_the_effective_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSD_SIMULATOR__SEED", "42")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["simulator"]["seed"] == 42
    table = runner.invoke(app, ["config", "show"])
    assert "MLSD_SIMULATOR__FRAUD__N_CARDS" in table.output


def test_simulate_lands_batches(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSD_SIMULATOR__FRAUD__N_CARDS", "200")
    result = runner.invoke(app, ["simulate", "fraud", "--days", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    landed = sorted(
        p.relative_to(tmp_path / ".mlsd/raw").as_posix()
        for p in (tmp_path / ".mlsd/raw").rglob("*.parquet")
    )
    assert landed == [
        "fraud/cards/2026-01-01.parquet",
        "fraud/chargebacks/2026-01-01.parquet",
        "fraud/chargebacks/2026-01-02.parquet",
        "fraud/merchants/2026-01-01.parquet",
        "fraud/transactions/2026-01-01.parquet",
        "fraud/transactions/2026-01-02.parquet",
    ]
    assert "true fraud rate" in result.output


def test_unknown_scenario_exits_2_with_the_known_ones(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["simulate", "recsys", "--days", "1", "--scenario", "nope"])
    assert result.exit_code == 2
    assert "new-catalog" in result.output
