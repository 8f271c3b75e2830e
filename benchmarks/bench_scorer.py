"""The fraud scorer, one row at a time as a model server scores: the ONNX graph on onnxruntime
against scikit-learn's `predict_proba`, on the lab's own model and rows, in the same run.

The model is the lab's: trained as the `train_fraud` flow trains it (its tasks' functions, on
the default simulated world), and the rows are its validation window's real feature rows.
Each scorer takes turns in rounds, so a disturbance of the shared machine hits both alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.record import Figure, load, record

ROUNDS = 5
ROWS_PER_ROUND = 400  # distinct rows, each scored once per scorer per round


def _lab_model() -> tuple[object, np.ndarray, int]:
    """(the lab's calibrated fraud model, validation feature rows, training rows)."""
    from mlsd.settings import Settings
    from pipeline.fraud_training_set import build_training_set
    from pipeline.train_fraud import train_models
    from tests.support.lab_recipe import build_data

    settings = Settings()
    build_data(settings, materialize=False)
    ts = build_training_set.fn(settings, None, 0)
    model = train_models.fn(settings, ts, 0, False)["gbm"]
    validate = ts.frame[ts.frame["window"] == "validate"][ts.features]
    train_rows = int((ts.frame["window"] == "train").sum())
    return model, validate.to_numpy(dtype=np.float64), train_rows


def _per_row_us(score_one, rows: np.ndarray) -> np.ndarray:
    times = np.empty(len(rows))
    for i, row in enumerate(rows):
        started = time.perf_counter_ns()
        score_one(row)
        times[i] = (time.perf_counter_ns() - started) / 1_000
    return times


def main() -> None:
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLSD_DATA_DIR"] = tmp
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        from models.fraud_onnx import export_fraud_onnx, fraud_scorer, probability_tolerance
        from serving.inference import limit_native_threads

        model, rows, train_rows = _lab_model()
    limit_native_threads()  # as a model server scores: one OpenMP thread
    started = time.perf_counter()
    graph = export_fraud_onnx(model)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    scorer, why = fraud_scorer(model, graph)
    check_s = time.perf_counter() - started
    if scorer is None:
        raise SystemExit(f"the lab's model did not pass the ONNX check: {why}")
    booster = model.calibrated_classifiers_[0].estimator.estimator  # type: ignore[attr-defined]

    rng = np.random.default_rng(0)
    picks = rows[rng.choice(len(rows), size=min(ROWS_PER_ROUND, len(rows)), replace=False)]
    as_lists = [r.tolist() for r in picks]
    onnx_times, sklearn_times = [], []
    for _ in range(ROUNDS):
        onnx_times.append(_per_row_us(scorer.score_row, as_lists))  # type: ignore[arg-type]
        sklearn_times.append(
            _per_row_us(lambda r: model.predict_proba(r.reshape(1, -1)), picks)  # type: ignore[attr-defined]
        )
    onnx_us, sklearn_us = np.concatenate(onnx_times), np.concatenate(sklearn_times)
    gap = float(np.max(np.abs(scorer.scores(rows) - model.predict_proba(rows)[:, 1])))  # type: ignore[attr-defined]
    tolerance = probability_tolerance(model)
    p50_onnx, p50_sklearn = float(np.percentile(onnx_us, 50)), float(np.percentile(sklearn_us, 50))
    record(
        "scorer",
        [
            Figure("fraud score, one row: onnxruntime p50", p50_onnx, "us"),
            Figure(
                "fraud score, one row: onnxruntime p99", float(np.percentile(onnx_us, 99)), "us"
            ),
            Figure("fraud score, one row: scikit-learn predict_proba p50", p50_sklearn, "us"),
            Figure(
                "fraud score, one row: scikit-learn predict_proba p99",
                float(np.percentile(sklearn_us, 99)),
                "us",
            ),
            Figure(
                "speed-up of onnxruntime over scikit-learn (p50)",
                p50_sklearn / p50_onnx,
                "x",
                ">= 10x",
                p50_sklearn / p50_onnx >= 10,
            ),
            Figure(
                "max |onnx - scikit-learn| over the validation window",
                gap,
                "probability",
                f"<= {tolerance:.2g} (the load check's bound)",
                gap <= tolerance,
            ),
            Figure("export to ONNX (skl2onnx)", export_s, "s"),
            Figure("load and check the graph against scikit-learn", check_s, "s"),
        ],
        {
            "trees": int(booster.n_iter_),
            "features": int(model.n_features_in_),  # type: ignore[attr-defined]
            "training_rows": train_rows,
            "scored_rows": len(picks) * ROUNDS,
            "graph_bytes": len(graph),
        },
        concurrency="1 (sequential, one row a call); onnxruntime on 1 intra-op and 1 inter-op "
        "thread; scikit-learn on 1 OpenMP thread",
        load_before=before,
        notes=f"{ROUNDS} interleaved rounds of {len(picks)} validation rows per scorer",
    )


if __name__ == "__main__":
    main()
