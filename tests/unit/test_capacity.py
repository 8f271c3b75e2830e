"""The capacity planner against a hand calculation on a fixed benchmark record, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlsd.capacity import CapacityError, load_bench, plan_capacity
from mlsd.cli import app

REPO = Path(__file__).resolve().parents[2]


def figure(name: str, value: float, unit: str = "ms") -> dict:
    return {"name": name, "value": value, "unit": unit, "target": "", "met": None}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    record = {
        "name": "router",
        "recorded_at": "2026-01-01T00:00:00+00:00",
        "machine": {"cores": 2},
        "figures": [
            figure("fraud @50/s via router p99", 6.0),
            figure("fraud @200/s via router p99", 9.0),
            figure("router CPU per fraud request @50/s", 1.5),
            figure("router CPU per fraud request @200/s", 1.0),
            figure("recs top-10 @10/s via router p99", 11.0),
            figure("router RSS (after Feast warm-up)", 300.0, "MiB"),
            figure("fraud server RSS", 400.0, "MiB"),
            figure("recsys server RSS", 500.0, "MiB"),
        ],
    }
    (tmp_path / "router.json").write_text(json.dumps(record))
    return tmp_path


def test_one_case_by_hand(results: Path):
    plan = plan_capacity(1000, 10, "fraud", load_bench(results))
    # Both rates meet 10 ms: a replica serves 200 req/s. Model servers: ceil(1000 / 200) + 1 = 6,
    # 2 cores each. Router: 1000 req/s x 1.0 ms = 1 core, / 0.6 = 1.67 -> 2, + 1 = 3.
    router, model = plan.components
    assert plan.per_replica_rps == 200
    assert (model.replicas, model.cores_each) == (6, 2.0)
    assert (router.replicas, router.cores_each) == (3, 1.0)
    assert plan.cores == 6 * 2 + 3 * 1
    assert plan.memory_mib == 6 * 400 + 3 * 300
    assert plan.replicas == 9


def test_a_tighter_p99_uses_the_slower_rate(results: Path):
    plan = plan_capacity(1000, 8, "fraud", load_bench(results))
    router, model = plan.components
    # Only 50 req/s met 8 ms: ceil(1000 / 50) + 1 = 21; router at the 50 req/s CPU figure:
    # 1000 x 1.5 ms = 1.5 cores / 0.6 = 2.5 -> 3, + 1 = 4.
    assert (plan.per_replica_rps, model.replicas, router.replicas) == (50, 21, 4)
    assert any("20x the rate" in line for line in plan.limits)


@pytest.mark.parametrize(
    ("rps", "p99", "message"),
    [
        (0, 10, "--rps must be a positive"),
        (-5, 10, "--rps must be a positive"),
        (100, 0, "--p99-ms must be a positive"),
        (100, -1, "--p99-ms must be a positive"),
        (100, 5, "lowest fraud p99 recorded is 6.0 ms"),
    ],
)
def test_refuses_what_it_cannot_answer(results: Path, rps: float, p99: float, message: str):
    with pytest.raises(CapacityError, match=message):
        plan_capacity(rps, p99, "fraud", load_bench(results))


def test_refuses_without_a_recorded_benchmark(tmp_path: Path):
    with pytest.raises(CapacityError, match="make bench"):
        load_bench(tmp_path)
    done = CliRunner().invoke(
        app, ["capacity", "--rps", "100", "--p99-ms", "10", "--results", str(tmp_path)]
    )
    assert done.exit_code == 2
    assert "no recorded router benchmark" in done.output


def test_cli_prints_the_plan_and_its_limits(results: Path):
    done = CliRunner().invoke(
        app, ["capacity", "--rps", "1000", "--p99-ms", "10", "--results", str(results)]
    )
    assert done.exit_code == 0, done.output
    assert "where this model stops being valid" in done.output
    assert "ceil(1000 / 200 req/s per replica) + 1 spare" in done.output
    done = CliRunner().invoke(
        app, ["capacity", "--rps", "0", "--p99-ms", "10", "--results", str(results)]
    )
    assert done.exit_code == 2 and "positive request rate" in done.output


def test_answers_from_the_recorded_benchmarks_of_this_repo():
    plan = plan_capacity(10_000, 50, "fraud", load_bench(REPO / "benchmarks" / "results"))
    assert plan.replicas > 0 and plan.cores > 0 and plan.memory_mib > 0
