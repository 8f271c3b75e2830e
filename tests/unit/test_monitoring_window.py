"""Judging a window with the real libraries (Evidently, Great Expectations, scikit-learn) on
small synthetic frames shaped like the fraud prediction log: drift is found where the world
moved and not where it did not, a unit error is a quality alert, too few rows decide nothing,
and each window leaves its report, summary and workspace snapshot."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlsd.settings import MonitoringSettings
from monitoring.history import read_history
from monitoring.judge import judge_fraud, judge_recsys
from monitoring.outputs import write_window
from monitoring.performance import click_through_by_arm
from monitoring.reference import ChampionReference
from monitoring.trigger import TriggerPolicy, window_signals
from monitoring.window import WindowSpan

FEATURES = ["card_tx_amount_24h", "amount_over_card_mean", "card_tx_count_24h", "hour_of_day"]
CFG = MonitoringSettings(min_rows=300)


def world(n: int, seed: int, inflate: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.0, n) * inflate
    frame = pd.DataFrame(
        {
            "card_tx_amount_24h": amount + rng.lognormal(3.0, 1.0, n) * inflate,
            "amount_over_card_mean": rng.lognormal(0.0, 0.5, n) * inflate,
            "card_tx_count_24h": rng.poisson(3, n).astype(float),
            "hour_of_day": rng.integers(0, 24, n).astype(float),
            "amount": amount,
            "country": rng.choice(["US", "GB", "FR"], n, p=[0.7, 0.2, 0.1]),
        }
    )
    fraud = rng.random(n) < 0.02
    frame["score"] = np.clip(np.where(fraud, rng.beta(5, 2, n), rng.beta(1, 60, n)), 0, 1)
    frame["label"] = fraud.astype(float)
    return frame


def logged(frame: pd.DataFrame, version: str = "3", labelled_share: float = 1.0) -> pd.DataFrame:
    out = frame.copy()
    n = len(out)
    out["request_id"] = [f"r{i}" for i in range(n)]
    out["at"] = SPAN.start + np.arange(n) * (SPAN.end - SPAN.start) / max(n, 1)  # the whole window
    out["arm"] = "champion"
    out["model_version"] = f"fraud/{version}"
    out["answered_by"] = f"fraud/{version}"
    out["degraded"] = False
    out["has_features"] = True
    out["decision"] = np.where(out["score"] >= 0.5, "block", "allow")
    keep = np.random.default_rng(1).random(n) < labelled_share
    out.loc[~keep, "label"] = np.nan
    return out


REFERENCE = ChampionReference(
    product="fraud",
    version="3",
    frame=world(3000, seed=0)[[*FEATURES, "amount", "country", "score", "label"]],
    validation_pr_auc=0.8,
    threshold=0.5,
)
SPAN = WindowSpan("fraud", 1000.0, 1600.0)


def test_an_unchanged_world_shows_no_drift():
    j = judge_fraud(SPAN, logged(world(2000, seed=1)), REFERENCE, CFG)
    assert j.verdict.status == "judged"
    assert j.verdict.drifted_share == 0.0
    assert not j.verdict.quality_alert
    assert window_signals(j.verdict, TriggerPolicy(min_rows=300)) == ()


def test_inflated_amounts_drift_and_each_column_states_its_method():
    j = judge_fraud(SPAN, logged(world(2000, seed=1, inflate=1.8)), REFERENCE, CFG)
    v = j.verdict
    assert {"amount", "card_tx_amount_24h", "amount_over_card_mean"} <= set(v.drifted_columns)
    assert "hour_of_day" not in v.drifted_columns
    assert v.drifted_share is not None and v.drifted_share >= 0.5
    assert not v.quality_alert  # inflation is drift, not a defect
    assert "input_drift" in window_signals(v, TriggerPolicy(min_rows=300))
    assert j.drift is not None
    by_column = {c.column: c for c in j.drift.columns}
    assert by_column["amount"].method == CFG.drift.num_method
    assert by_column["country"].method == CFG.drift.cat_method
    assert by_column["amount"].psi is not None


def test_a_unit_change_is_a_quality_alert_not_a_retrain():
    broken = world(2000, seed=1)
    broken["amount"] = broken["amount"] * 100  # cents, not dollars
    j = judge_fraud(SPAN, logged(broken), REFERENCE, CFG)
    assert j.verdict.quality_alert
    assert any(f.startswith("amount:") for f in j.verdict.failed_expectations)
    assert window_signals(j.verdict, TriggerPolicy(min_rows=300)) == ()


def test_too_few_rows_is_not_enough_data_and_runs_no_report():
    j = judge_fraud(SPAN, logged(world(50, seed=1)), REFERENCE, CFG)
    assert j.verdict.status == "not_enough_data"
    assert j.drift is None and j.verdict.drifted_share is None


def test_rows_of_another_version_or_a_fallback_are_not_judged():
    window = logged(world(600, seed=1), version="2")
    assert judge_fraud(SPAN, window, REFERENCE, CFG).verdict.rows == 0
    window = logged(world(600, seed=1))
    window["degraded"] = True
    assert judge_fraud(SPAN, window, REFERENCE, CFG).verdict.rows == 0


def test_labelled_and_estimated_performance_side_by_side():
    j = judge_fraud(SPAN, logged(world(2000, seed=1), labelled_share=0.5), REFERENCE, CFG)
    v = j.verdict
    assert 800 < v.labelled_rows < 1200
    assert v.pr_auc is not None and v.pr_auc > 0.5  # the synthetic scores separate well
    assert v.precision is not None and v.recall is not None
    # Calibrated-looking scores: the estimate is the mean score of the blocked.
    assert v.estimated_precision is not None and 0.5 <= v.estimated_precision <= 1
    assert v.alert_rate == pytest.approx(v.estimated_alert_rate)


def test_a_window_missing_an_input_fails_naming_it():
    window = logged(world(600, seed=1)).drop(columns=["hour_of_day"])
    with pytest.raises(ValueError, match="hour_of_day"):
        judge_fraud(SPAN, window, REFERENCE, CFG)


def test_each_window_leaves_a_summary_a_report_and_a_workspace_snapshot(tmp_path):
    j = judge_fraud(SPAN, logged(world(1000, seed=1, inflate=1.8)), REFERENCE, CFG)
    files = write_window(tmp_path, j, {"action": "none", "reason": "test"})
    summary = json.loads(files.summary.read_text())
    assert summary["verdict"]["window_id"] == SPAN.window_id
    assert {c["column"] for c in summary["drift"]} >= set(FEATURES) | {"score"}
    assert files.html is not None and "<html" in files.html.read_text()[:2000].lower()
    assert files.snapshot_id
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(tmp_path / "workspace"))
    (project,) = ws.search_project("mlsd fraud")
    assert [str(r) for r in ws.list_runs(project.id)] == [files.snapshot_id]
    assert ws.get_run(project.id, files.snapshot_id) is not None  # what Evidently's UI reads
    (verdict,) = read_history(tmp_path, "fraud")
    assert verdict == j.verdict


def test_the_trigger_s_decision_is_added_without_a_second_snapshot(tmp_path):
    from monitoring.outputs import write_summary

    j = judge_fraud(SPAN, logged(world(1000, seed=1)), REFERENCE, CFG)
    files = write_window(tmp_path, j, None)
    write_summary(tmp_path, j, {"action": "none", "reason": "test"})
    assert json.loads(files.summary.read_text())["trigger"]["action"] == "none"
    (snapshots,) = (tmp_path / "workspace").glob("*/snapshots")
    assert [p.stem for p in snapshots.glob("*.json")] == [files.snapshot_id]  # one, not two


def test_a_half_made_project_folder_does_not_stop_the_next_window(tmp_path):
    # A process killed while making the project leaves a folder without its metadata.
    (tmp_path / "workspace" / "0190a7f2-0000-7000-8000-000000000000").mkdir(parents=True)
    j = judge_fraud(SPAN, logged(world(1000, seed=1)), REFERENCE, CFG)
    assert write_window(tmp_path, j, None).snapshot_id


def test_the_next_window_joins_the_same_evidently_project(tmp_path):
    # Snapshots are written with Evidently's file storage, not through a Workspace (which
    # reads every snapshot on opening): the project is found again, not made twice.
    ids = []
    for seed in (1, 2):
        j = judge_fraud(SPAN, logged(world(1000, seed=seed)), REFERENCE, CFG)
        ids.append(write_window(tmp_path, j, None).snapshot_id)
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(tmp_path / "workspace"))
    (project,) = ws.search_project("mlsd fraud")
    assert sorted(str(r) for r in ws.list_runs(project.id)) == sorted(ids)


def recsys_window(n: int, start: float, seed: int = 3) -> pd.DataFrame:
    """A recommender log of n 10-item slates a second apart from `start`, a quarter to a
    challenger; the listener plays 30 % of the champion's items and 20 % of the challenger's.
    As the log gives it: a slate with a play is labelled 1, one without feedback is not
    labelled, and `hits` counts its items played."""
    rng = np.random.default_rng(seed)
    challenger = np.arange(n) % 4 == 0
    hits = rng.binomial(10, np.where(challenger, 0.2, 0.3))
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "at": start + np.arange(n),
            "arm": np.where(challenger, "challenger", "champion"),
            "model_version": "recsys/2",
            "answered_by": "recsys/2",
            "degraded": False,
            "score": rng.random(n),
            "decision": "recommend",
            "label": np.where(hits > 0, 1.0, np.nan),
            "shown": 10,
            "hits": hits,
            "has_features": False,
        }
    )


def test_recsys_windows_report_click_through_by_arm():
    j = judge_recsys(WindowSpan("recsys", 1000.0, 1800.0), recsys_window(800, 1000.0), CFG)
    assert j.verdict.status == "judged" and j.verdict.model_version == "2"
    ctr = j.verdict.click_through
    assert set(ctr) == {"champion", "challenger"}
    # Per item shown: over labelled slates alone both arms would read 1.0 (nearly every slate
    # of 10 has a play).
    assert abs(ctr["champion"] - 0.3) < 0.03 and abs(ctr["challenger"] - 0.2) < 0.04


def test_a_recsys_window_is_judged_against_its_own_minimum():
    # A demo's recommender window: about 200 slates in 40 s at 5 req/s, under the fraud bar.
    span = WindowSpan("recsys", 1000.0, 1040.0)
    slates = recsys_window(200, 1000.0)
    slates["at"] = 1000.0 + np.arange(200) * 0.2
    cfg = MonitoringSettings(min_rows=500, recsys_min_rows=150)
    assert (slates["arm"] == "champion").sum() == 150
    assert judge_recsys(span, slates, cfg).verdict.status == "judged"
    fewer = MonitoringSettings(min_rows=500, recsys_min_rows=151)
    assert judge_recsys(span, slates, fewer).verdict.status == "not_enough_data"
    # The fraud bar is untouched: 200 payments are still too few for a fraud window.
    assert judge_fraud(SPAN, logged(world(200, seed=1)), REFERENCE, cfg).verdict.status == (
        "not_enough_data"
    )


def test_a_window_its_rows_cover_only_in_part_is_not_judged():
    # Traffic that started two thirds into the window: part of a day, whatever its size.
    late = logged(world(2000, seed=1))
    late["at"] = SPAN.end - (SPAN.end - late["at"]) / 3
    j = judge_fraud(SPAN, late, REFERENCE, CFG)
    assert j.verdict.status == "not_enough_data" and j.drift is None
    assert judge_fraud(SPAN, logged(world(2000, seed=1)), REFERENCE, CFG).verdict.status == (
        "judged"
    )


def test_the_recsys_frame_counts_items_shown_and_played_per_slate():
    from monitoring.window import recsys_frame
    from serving.prediction_log.records import LoggedPrediction
    from tests.unit.test_prediction_log import recs_record

    def slate(request_id: str, items: int, label: int | None, hits: int | None):
        shown = recs_record(request_id, [f"i{i}" for i in range(items)])
        return LoggedPrediction(**vars(shown), label=label, hits=hits)

    # Played twice; no feedback at all (the log leaves label and hits unset); an empty answer.
    frame = recsys_frame([slate("a", 10, 1, 2), slate("b", 10, None, None), slate("c", 0, 0, 0)])
    assert frame[["shown", "hits"]].to_numpy().tolist() == [[10, 2], [10, 0], [0, 0]]
    assert click_through_by_arm(frame) == {"champion": 2 / 20}
    empty = recsys_frame([])
    assert {"shown", "hits", "label", "arm"} <= set(empty.columns) and empty.empty
    assert click_through_by_arm(empty) == {}


def test_the_history_as_of_a_window_keeps_it_whatever_ended_later(tmp_path):
    from monitoring.history import HISTORY_LIMIT

    # A window judged on demand over a past span, then more scheduled windows than the history
    # holds ending after it: as of its end, it is still the latest evidence.
    ends = [1000.0 + 10 * i for i in range(HISTORY_LIMIT + 5)]
    for end in ends:
        span = WindowSpan("fraud", end - 10, end)
        write_window(tmp_path, judge_fraud(span, logged(world(10, seed=1)), REFERENCE, CFG), None)
    # And one ending half a second after `until`, in its second: chosen by name, not kept.
    late = WindowSpan("fraud", ends[2] - 4.5, ends[2] + 0.5)
    write_window(tmp_path, judge_fraud(late, logged(world(10, seed=1)), REFERENCE, CFG), None)
    as_of = read_history(tmp_path, "fraud", until=ends[2])
    assert [v.end for v in as_of] == ends[:3]
    assert len(read_history(tmp_path, "fraud")) == HISTORY_LIMIT
