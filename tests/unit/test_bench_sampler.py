"""The loop benchmark's memory and CPU summary over a lab's readings (benchmarks.bench_stack)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_stack import StackSampler

GB = 10**9


def test_the_summary_names_who_makes_the_memory_peak_and_counts_cpu_per_process(tmp_path: Path):
    sampler = StackSampler(tmp_path)
    sampler.wall_offset = 1000.0
    # (time, {component: (PSS, RSS, CPU seconds, pid)}); the first reading is before the world.
    sampler.samples = [
        (0.0, {"mlflow": (1 * GB, 2 * GB, 0.0, 10)}),
        (10.0, {"mlflow": (1 * GB, 2 * GB, 1.0, 10), "world": (GB // 2, GB, 0.0, 20)}),
        (20.0, {"mlflow": (1 * GB, 2 * GB, 2.0, 10), "world": (GB // 2, GB, 5.0, 20)}),
        # A retrain's run under `flows`: the peak.
        (30.0, {"mlflow": (1 * GB, 2 * GB, 3.0, 10), "world": (GB // 2, GB, 10.0, 20),
                "flows": (2 * GB, 3 * GB, 4.0, 30)}),
        (40.0, {"mlflow": (1 * GB, 2 * GB, 4.0, 10), "world": (GB // 2, GB, 15.0, 20),
                "flows": (GB // 2, GB, 9.0, 30)}),
    ]  # fmt: skip
    summary = sampler.summary()
    assert summary["readings"] == 4 and summary["seconds"] == 30.0
    assert summary["pss_peak"] == 3.5 * GB and summary["rss_peak"] == 6 * GB
    assert summary["pss_at_peak"] == {"mlflow": GB, "world": GB // 2, "flows": 2 * GB}
    assert summary["peak_at"] == 1030.0  # when it was read (wall clock), to find its flow runs
    # Cores from each process's first reading: the world 15 s of CPU in 30 s, flows 5 in 10.
    assert summary["cpu_cores"] == {"mlflow": 0.1, "world": 0.5, "flows": 0.5}
