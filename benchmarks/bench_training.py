"""Training on the default simulated data: wall time of each flow and the quality each reaches."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.record import Figure, load, record


def main() -> None:
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLSD_DATA_DIR"] = tmp
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        from prefect.testing.utilities import prefect_test_harness

        from mlsd.settings import Settings
        from pipeline.train_fraud import train_fraud
        from pipeline.train_recsys import train_recsys
        from tests.support.lab_recipe import build_data

        steps = build_data(Settings(), materialize=False).seconds
        uri = f"sqlite:///{tmp}/mlflow.db"
        with prefect_test_harness():
            started = time.perf_counter()
            fraud = train_fraud(tracking_uri=uri)
            fraud_s = time.perf_counter() - started
            started = time.perf_counter()
            recsys = train_recsys(tracking_uri=uri)
            recsys_s = time.perf_counter() - started
        sim = Settings().simulator
    f, r = fraud["metrics"], recsys["metrics"]
    baselines = ("baseline_logistic_pr_auc", "baseline_rules_pr_auc")
    record(
        "training",
        [
            Figure("train_fraud flow, end to end", fraud_s, "s", "< 60 s", fraud_s < 60),
            Figure(
                "fraud PR-AUC (validation window)",
                f["pr_auc"],
                "",
                ">= 10x positive rate",
                f["pr_auc"] >= 10 * f["positive_rate"],
            ),
            Figure("fraud positive rate (validation window)", f["positive_rate"], ""),
            Figure("fraud ROC-AUC", f["roc_auc"], ""),
            Figure("fraud expected cost saved vs no model", f["cost_saved_share"], "share"),
            Figure("train_recsys flow, end to end", recsys_s, "s"),
            Figure(
                "recsys NDCG@10",
                r["ndcg_at_10"],
                "",
                ">= 2x popularity",
                r["ndcg_lift_over_popularity"] >= 2,
            ),
            Figure(
                "recsys NDCG@10 of popularity baseline", r["baseline_popularity_ndcg_at_10"], ""
            ),
            Figure("recsys recall@10", r["recall_at_10"], ""),
            Figure("recsys catalogue coverage@10", r["coverage_at_10"], "share"),
            *[Figure(f"lab set-up: {k}", v, "s") for k, v in steps.items()],
        ],
        {
            "fraud_cards": sim.fraud.n_cards,
            "recsys_users": sim.recsys.n_users,
            "days": sim.days,
            "fraud_beats_baselines": all(f["pr_auc"] > f[b] for b in baselines),
        },
        concurrency="1 flow at a time; Prefect test harness; MLflow on SQLite",
        load_before=before,
        notes=f"fraud baselines PR-AUC: logistic {f['baseline_logistic_pr_auc']:.3f}, rules {f['baseline_rules_pr_auc']:.3f}",
    )


if __name__ == "__main__":
    main()
