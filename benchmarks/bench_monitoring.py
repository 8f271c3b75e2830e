"""Monitoring: seconds to judge a 100,000-row fraud window (drift by Evidently over every model
input and the score, GX on the live window, labelled and estimated performance) against a
5,000-row reference. Target: drift computation <= 10 s (issue 11).

The frames are synthetic, shaped like the fraud prediction log (the model's 19 features with
heavy-tailed amounts and counts, the request's amount and country, a skewed score, labels on
half the rows), the window with amounts x1.8 as in amount-inflation: the cost depends on the
columns and the rows Evidently sees (sampled to monitoring.drift.max_rows), not on the values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.record import Figure, load, record
from mlsd.settings import MonitoringSettings
from mlsd.telemetry import quiet_libraries

WINDOW_ROWS = 100_000
REFERENCE_ROWS = 5_000
TARGET_S = 10.0


def fraud_like(n: int, seed: int, inflate: float = 1.0) -> pd.DataFrame:
    from features.catalog import SERVICES, service_features

    rng = np.random.default_rng(seed)
    frame = {}
    for f in service_features(SERVICES["fraud_scoring"]):
        scale = inflate if "amount" in f.name else 1.0
        if f.dtype == "int64":
            frame[f.name] = rng.poisson(3, n).astype(float)
        else:
            frame[f.name] = rng.lognormal(2.0, 1.0, n) * scale
    frame["amount"] = rng.lognormal(3.5, 1.0, n) * inflate
    frame["country"] = rng.choice(["US", "GB", "FR", "DE"], n, p=[0.6, 0.2, 0.1, 0.1])
    fraud = rng.random(n) < 0.005
    frame["score"] = np.where(fraud, rng.beta(5, 2, n), rng.beta(1, 80, n))
    frame["label"] = np.where(rng.random(n) < 0.5, fraud.astype(float), np.nan)
    return pd.DataFrame(frame)


def logged(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["request_id"] = [f"r{i}" for i in range(len(out))]
    out["at"] = np.arange(len(out), dtype=float)
    out["arm"] = "champion"
    out["model_version"] = "fraud/1"
    out["answered_by"] = "fraud/1"
    out["degraded"] = False
    out["has_features"] = True
    out["decision"] = "allow"
    return out


# Windows already in the Evidently workspace when one more is written: ten minutes of the demo's
# (one every 15 s). Opening a `Workspace` read them all (3.1 s of a live window with 32).
PRIOR_WINDOWS = 40


def write_beside_earlier_windows(judgement: Any) -> float:
    """Seconds to write a window's files into a workspace that holds PRIOR_WINDOWS snapshots."""
    from monitoring.outputs import write_window

    with tempfile.TemporaryDirectory() as tmp:
        first = write_window(Path(tmp), judgement, None)
        (snapshots,) = Path(tmp, "workspace").glob("*/snapshots")
        for _ in range(PRIOR_WINDOWS - 1):
            shutil.copyfile(
                snapshots / f"{first.snapshot_id}.json", snapshots / f"{uuid.uuid4()}.json"
            )
        started = time.perf_counter()
        write_window(Path(tmp), judgement, None)
        return time.perf_counter() - started


def main() -> None:
    quiet_libraries()
    from monitoring.drift import measure_drift
    from monitoring.judge import judge_fraud, reference_columns
    from monitoring.quality import check_window
    from monitoring.reference import ChampionReference
    from monitoring.window import WindowSpan

    cfg = MonitoringSettings()
    reference = fraud_like(REFERENCE_ROWS, seed=0)
    window = logged(fraud_like(WINDOW_ROWS, seed=1, inflate=1.8))
    numeric, categorical = reference_columns(reference)
    before = load()
    # Warm-up: imports and Evidently's first report are paid once per process.
    measure_drift(reference.head(500), window.head(500), numeric, categorical, cfg.drift)
    check_window(window.head(500), numeric)

    started = time.perf_counter()
    drift = measure_drift(reference, window, numeric, categorical, cfg.drift)
    drift_s = time.perf_counter() - started
    started = time.perf_counter()
    check_window(window, [*numeric, *categorical], reference)
    quality_s = time.perf_counter() - started
    ref = ChampionReference("fraud", "1", reference, validation_pr_auc=0.5, threshold=0.5)
    started = time.perf_counter()
    judgement = judge_fraud(WindowSpan("fraud", 0.0, float(WINDOW_ROWS)), window, ref, cfg)
    judge_s = time.perf_counter() - started
    started = time.perf_counter()
    assert drift.snapshot is not None
    html = drift.snapshot.get_html_str(as_iframe=False)
    html_s = time.perf_counter() - started
    write_s = write_beside_earlier_windows(judgement)

    record(
        "monitoring",
        [
            Figure(
                f"drift of a {WINDOW_ROWS:,}-row window (Evidently, {len(numeric) + len(categorical)}"
                " inputs + score)",
                drift_s,
                "s",
                f"<= {TARGET_S:.0f} s",
                drift_s <= TARGET_S,
            ),
            Figure(f"GX on a {WINDOW_ROWS:,}-row live window", quality_s, "s"),
            Figure("whole window judged (quality, drift, performance)", judge_s, "s"),
            Figure("HTML report rendered", html_s, "s"),
            Figure(
                f"a window's files written (summary, HTML, Evidently snapshot) beside "
                f"{PRIOR_WINDOWS} earlier windows",
                write_s,
                "s",
            ),
            Figure(
                "inputs found drifted (amounts x1.8)",
                judgement.verdict.drifted_share or 0.0,
                "share",
            ),
        ],
        {
            "window_rows": WINDOW_ROWS,
            "reference_rows": REFERENCE_ROWS,
            "rows_evidently_saw": drift.rows_current,
            "inputs": len(numeric) + len(categorical),
            "num_method": cfg.drift.num_method,
            "cat_method": cfg.drift.cat_method,
            "html_chars": len(html),
        },
        concurrency=f"1 process ({os.cpu_count()} cores shared)",
        load_before=before,
    )


if __name__ == "__main__":
    main()
