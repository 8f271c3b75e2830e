"""The monitor flow on the real lab: the champion's reference logged by training, windows of the
real prediction log judged by Evidently and GX, reports and events left behind; and each failure
(too few rows, a missing reference, a failing report) says so clearly, starts no retrain and
leaves serving's aliases as they were."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlsd import events
from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from mlsd.timeline import read_timeline
from monitoring.flow import monitor
from monitoring.reference import ReferenceMissing, load_champion_reference
from serving.prediction_log import PredictionRecord, SqlitePredictionLog
from serving.prediction_log.records import Feedback

pytestmark = pytest.mark.integration
SLOTS = itertools.count()

# Inputs an amount inflation moves (x1.8), as the world's amount-inflation scenario does.
AMOUNT_COLUMNS = (
    "amount",
    "card_tx_amount_1h",
    "card_tx_amount_24h",
    "card_tx_amount_7d",
    "amount_over_card_mean",
)


@pytest.fixture(scope="module")
def lab(trained_lab, prefect_api):
    import os

    # The windows these tests write are judged, never retrained on: a retrain request would
    # start a training run on the session's Prefect server after the module ended, and the
    # next module counts training runs (three signalled windows here, each in an earlier slot
    # than the last, so each decision sees its own alone; three of three would be needed).
    trigger = {"MLSD_MONITORING__TRIGGER__M": "3", "MLSD_MONITORING__TRIGGER__N": "3"}
    os.environ.update({"MLSD_MONITORING__MIN_ROWS": "300", **trigger})
    yield trained_lab
    for name in ("MLSD_MONITORING__MIN_ROWS", *trigger):
        os.environ.pop(name, None)


def write_rows(
    settings: Settings,
    reference: pd.DataFrame,
    version: str,
    inflate: float = 1.0,
    drop: str | None = None,
    labels: Sequence[int] | None = None,
) -> float:
    """Log the reference's rows as served predictions of `version` in a one-minute slot of the
    past that no other test writes to, spread over the 30 s window the tests judge (a window
    its rows do not cover is not judged), and `labels` as their feedback (as the router joins
    `/v1/feedback`); returns the window's end."""
    name = settings.training.fraud_model_name
    now = time.time() - 3600 - next(SLOTS) * 120
    records = []
    step = 28.0 / max(len(reference), 1)
    for i, row in enumerate(reference.to_dict("records")):
        features = {
            k: (v * inflate if k in AMOUNT_COLUMNS else v)
            for k, v in row.items()
            if k not in ("amount", "country", "score", "label") and k != drop
        }
        records.append(
            PredictionRecord(
                request_id=f"mon-{uuid.uuid4().hex}",
                role="served",
                at=now - 19 + i * step,
                product="fraud",
                entity=f"card-{i}",
                arm="champion",
                experiment=None,
                model_version=f"{name}/{version}",
                answered_by=f"{name}/{version}",
                inputs={"amount": row["amount"] * inflate, "country": row["country"]},
                features=features,
                output={"score": row["score"]},
                score=float(row["score"]),
                decision="allow",
                latency_ms=2.0,
                degraded=False,
                degraded_reason=None,
                error=None,
            )
        )

    async def write() -> None:
        log = SqlitePredictionLog(settings.router.prediction_log, settings)  # type: ignore[arg-type]
        try:
            await log.write_many(records)
            for record, label in zip(records, labels or (), strict=False):
                feedback = Feedback(record.request_id, "fraud", time.time(), label=int(label))
                assert await log.join_label(feedback) == "joined"
        finally:
            await log.close()

    asyncio.run(write())
    return now + 10


def lab_events(since: dt.datetime, name: str, until_found: bool = True) -> list:
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in read_timeline(since, flow_runs=False) if e.name == name]
        if found or not until_found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_reference_travels_with_the_champion(lab):
    ref = load_champion_reference(lab.tracking_uri, "fraud", lab.fraud_model_name)
    assert ref.version == ModelRegistry(lab.tracking_uri).version_of(
        lab.fraud_model_name, "champion"
    )
    assert {"amount", "country", "score", "label", "amount_over_card_mean"} <= set(
        ref.frame.columns
    )
    assert ref.validation_pr_auc is not None and ref.threshold is not None
    settings = Settings()
    assert 100 <= len(ref.frame) <= settings.monitoring.reference_rows
    # Drawn from the latest days of the data the champion was trained on (up to its latest
    # payment), after its calibration and validation windows (which end label_maturity_days
    # before the data).
    registry = ModelRegistry(lab.tracking_uri)
    run_id = registry.client.get_model_version(lab.fraud_model_name, ref.version).run_id
    params = registry.client.get_run(run_id).data.params
    as_of = dt.datetime.fromisoformat(params["as_of"])
    since = dt.datetime.fromisoformat(params["reference_start"])
    until = dt.datetime.fromisoformat(params["reference_end"])
    assert until - since == dt.timedelta(days=settings.monitoring.reference_days)
    assert as_of - dt.timedelta(days=1) < until <= as_of
    assert since > dt.datetime.fromisoformat(params["validate_end"])
    assert int(params["rows_reference"]) == len(ref.frame)


def test_a_drifted_window_is_judged_reported_and_emitted(lab):
    settings = Settings()
    registry = ModelRegistry(lab.tracking_uri)
    aliases = registry.aliases(lab.fraud_model_name)
    ref = load_champion_reference(lab.tracking_uri, "fraud", lab.fraud_model_name)
    since = dt.datetime.now(dt.UTC)
    until = write_rows(settings, ref.frame.head(800), ref.version, inflate=1.8)
    result = monitor(product="fraud", window_seconds=30, until=until)
    v = result["verdict"]
    assert v["status"] == "judged" and v["rows"] == 800
    bar = settings.monitoring.trigger.drifted_share
    assert "amount" in v["drifted_columns"] and v["drifted_share"] >= bar
    assert not v["quality_alert"]
    assert Path(result["report"]).is_file() and result["snapshot"]
    assert "/runs/flow-run/" in result["flow_run_url"]  # Prefect's UI on this very run
    summary = json.loads(Path(result["summary"]).read_text())
    assert summary["trigger"]["action"] in ("none", "retrain", "suppress")
    assert lab_events(since, events.WINDOW_JUDGED)
    assert lab_events(since, events.DRIFT_DETECTED)
    assert registry.aliases(lab.fraud_model_name) == aliases  # monitoring never moves serving


def test_a_new_fraud_pattern_is_caught_by_labels_alone(lab):
    """`new-fraud-pattern` draws the inputs exactly as before; only their relation to the label
    changes: night-time online purchases in three categories become fraud, half of them
    (simulator/fraud.py), and the model sees neither category nor channel. The window's rows
    are the champion's own training sample (real inputs, real scores), labelled the way that
    world labels them: the input-drift check must stay quiet and labelled PR-AUC must fall."""
    import numpy as np

    from monitoring.trigger import TriggerPolicy

    settings = Settings()
    policy = TriggerPolicy.from_settings(settings.monitoring)
    ref = load_champion_reference(lab.tracking_uri, "fraud", lab.fraud_model_name)
    rows = ref.frame.head(800)
    night = (rows["hour_of_day"] < 6).to_numpy()
    relabelled = night & (np.random.default_rng(11).random(len(rows)) < 0.3)
    labels = rows["label"].to_numpy(dtype=int) | relabelled
    since = dt.datetime.now(dt.UTC)
    until = write_rows(settings, rows, ref.version, labels=labels.tolist())
    result = monitor(product="fraud", window_seconds=30, until=until)
    v = result["verdict"]
    assert v["status"] == "judged" and v["labelled_rows"] == len(rows)
    assert v["drifted_share"] < policy.drifted_share, v["drifted_columns"]
    assert v["pr_auc"] <= v["reference_pr_auc"] * (1 - policy.pr_auc_drop), v
    # The event needs the labelled frauds the old labels lack (fewer than the policy's 5 in
    # this small lab's sample): the relabelled night rows are what make the drop judgeable.
    assert lab_events(since, events.PERFORMANCE_DROPPED)
    assert lab_events(since, events.DRIFT_DETECTED, until_found=False) == []
    # Signalled, but this module's policy (3 of 3) starts no training run to leak into the next.
    assert result["decision"]["action"] == "none", result["decision"]


def test_a_window_judged_over_a_past_span_is_its_decisions_latest_evidence(lab):
    """`mlsd monitor --window` or a walkthrough's `--judge` judges a span that ended before
    the latest scheduled window: the trigger decides on the windows up to it, not on whichever
    window of the history ended last (here one that ended now, with nothing in it)."""
    settings = Settings()
    ref = load_champion_reference(lab.tracking_uri, "fraud", lab.fraud_model_name)
    later = monitor(product="fraud", window_seconds=1)
    assert later["verdict"]["status"] == "not_enough_data"
    until = write_rows(settings, ref.frame.head(800), ref.version, inflate=1.8)
    result = monitor(product="fraud", window_seconds=30, until=until)
    judged = result["verdict"]["window_id"]
    assert result["verdict"]["status"] == "judged"
    assert judged in result["decision"]["window_ids"], result["decision"]
    assert later["verdict"]["window_id"] not in result["decision"]["window_ids"]
    assert not result["decision"]["reason"].startswith("not enough data"), result["decision"]


def test_too_few_rows_say_not_enough_data_and_decide_nothing(lab):
    # The last second of the log: nothing was served in it.
    result = monitor(product="fraud", window_seconds=1)
    assert result["verdict"]["status"] == "not_enough_data"
    assert result["decision"]["action"] == "none"
    assert result["decision"]["reason"].startswith("not enough data")


def test_a_failing_report_fails_the_run_and_requests_no_retrain(lab):
    settings = Settings()
    registry = ModelRegistry(lab.tracking_uri)
    aliases = registry.aliases(lab.fraud_model_name)
    ref = load_champion_reference(lab.tracking_uri, "fraud", lab.fraud_model_name)
    since = dt.datetime.now(dt.UTC)
    # A logged window that lacks one of the model's inputs: Evidently cannot compare it.
    until = write_rows(settings, ref.frame.head(400), ref.version, inflate=1.8, drop="hour_of_day")
    state = monitor(product="fraud", window_seconds=30, until=until, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="hour_of_day"):
        state.result()
    assert lab_events(since, events.RETRAIN_REQUESTED, until_found=False) == []
    assert lab_events(since, events.WINDOW_JUDGED, until_found=False) == []
    assert registry.aliases(lab.fraud_model_name) == aliases


def test_a_champion_without_reference_gets_a_clear_message(lab, monkeypatch):
    import mlflow

    name = f"fraud-noref-{uuid.uuid4().hex[:6]}"
    client = ModelRegistry(lab.tracking_uri).client
    mlflow.set_tracking_uri(lab.tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_param("note", "a version trained before references were logged")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    with pytest.raises(ReferenceMissing, match=r"champion v1 has no reference.*retrain"):
        load_champion_reference(lab.tracking_uri, "fraud", name)
    monkeypatch.setenv("MLSD_TRAINING__FRAUD_MODEL_NAME", name)
    from mlsd.cli import app

    out = CliRunner().invoke(app, ["monitor", "fraud", "--window", "5"])
    assert out.exit_code == 1, out.output
    assert "no reference" in out.output and "retrain" in out.output
    assert ModelRegistry(lab.tracking_uri).aliases(name) == {"champion": "1"}


def test_a_versions_reference_is_kept_by_its_run_and_a_new_champion_is_read(lab, tmp_path):
    """The monitor's cache of what a run logged: asked again, the champion's reference comes
    from the cache (here: not the artifact rewritten since, which training never does); a
    missing one is asked again; a new champion's comes from its own run."""
    import mlflow

    from mlsd.registry import REFERENCE_DIR, REFERENCE_PATH

    name = f"fraud-cache-{uuid.uuid4().hex[:6]}"
    client = ModelRegistry(lab.tracking_uri).client
    mlflow.set_tracking_uri(lab.tracking_uri)
    client.create_registered_model(name)

    def log_reference(run_id: str, frame: pd.DataFrame) -> None:
        path = tmp_path / run_id / Path(REFERENCE_PATH).name
        path.parent.mkdir(exist_ok=True)
        frame.to_parquet(path)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(path), REFERENCE_DIR)

    def new_champion(pr_auc: float) -> tuple[str, str]:
        with mlflow.start_run() as run:
            mlflow.log_metric("pr_auc", pr_auc)
        run_id = run.info.run_id
        mv = client.create_model_version(name, f"runs:/{run_id}/model", run_id)
        client.set_registered_model_alias(name, "champion", mv.version)
        return str(mv.version), run_id

    def load(cache: Path | None):
        return load_champion_reference(lab.tracking_uri, "fraud", name, cache_dir=cache)

    cache = tmp_path / "cache"
    version, run_id = new_champion(0.5)
    with pytest.raises(ReferenceMissing, match="has no reference"):
        load(cache)
    first = pd.DataFrame({"amount": [1.0, 2.0], "score": [0.1, 0.2]})
    log_reference(run_id, first)
    loaded = load(cache)  # the error was not kept: asked again, found
    assert loaded.version == version and loaded.validation_pr_auc == 0.5
    pd.testing.assert_frame_equal(loaded.frame, first)

    rewritten = pd.DataFrame({"amount": [9.0], "score": [0.9]})
    log_reference(run_id, rewritten)
    pd.testing.assert_frame_equal(load(None).frame, rewritten)  # the registry's new bytes
    pd.testing.assert_frame_equal(load(cache).frame, first)  # the cache, for the same run

    new_version, new_run = new_champion(0.7)
    second = pd.DataFrame({"amount": [3.0, 4.0, 5.0], "score": [0.3, 0.4, 0.5]})
    log_reference(new_run, second)
    moved = load(cache)
    assert moved.version == new_version != version and moved.validation_pr_auc == 0.7
    pd.testing.assert_frame_equal(moved.frame, second)
    assert len(list(cache.rglob("output.pkl"))) == 2  # one entry per version's run

    load_champion_reference(lab.tracking_uri, "fraud", name, cache_dir=cache, keep_versions=1)
    assert len(list(cache.rglob("output.pkl"))) == 1  # the oldest read is let go


def test_watch_once_prints_the_timeline(lab):
    from mlsd.cli import app

    out = CliRunner().invoke(app, ["watch", "--once", "--since", "30"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "window judged" in out.output and "mlsd.model.fraud" not in out.output
