"""Simulator throughput: how fast the world makes (and lands) a million card transactions."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.record import Figure, load, record
from mlsd.settings import FraudWorldSettings, Settings, SimulatorSettings
from simulator import run_simulation, simulate_frames

CARDS, DAYS = 50_000, 10  # ~1.0M transactions at 2 per card per day


def main() -> None:
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            simulator=SimulatorSettings(fraud=FraudWorldSettings(n_cards=CARDS, n_merchants=5_000)),
        )
        started = time.perf_counter()
        frames = simulate_frames(settings, "fraud", days=DAYS, seed=1)
        in_memory_s = time.perf_counter() - started
        rows = len(frames["transactions"])

        started = time.perf_counter()
        run_simulation(settings, "fraud", days=DAYS, seed=1)
        landed_s = time.perf_counter() - started

        started = time.perf_counter()
        recsys = simulate_frames(settings, "recsys", days=DAYS, seed=1)
        recsys_s = time.perf_counter() - started
        recsys_rows = len(recsys["interactions"])

    record(
        "simulator",
        [
            Figure("fraud transactions generated", rows / in_memory_s, "rows/s"),
            Figure(
                "1M fraud transactions, generated and landed as parquet",
                landed_s * 1e6 / rows,
                "s",
                "< 10 s",
                landed_s * 1e6 / rows < 10,
            ),
            Figure("fraud transactions generated and landed", rows / landed_s, "rows/s"),
            Figure("recsys interactions generated", recsys_rows / recsys_s, "rows/s"),
        ],
        {
            "fraud_transactions": rows,
            "cards": CARDS,
            "days": DAYS,
            "recsys_interactions": recsys_rows,
        },
        concurrency="1 process (numpy may use both cores)",
        load_before=before,
    )


if __name__ == "__main__":
    main()
