"""Judge one window: quality (GX), drift (Evidently) and performance (labelled and estimated)
against the champion's reference, into a WindowVerdict. No I/O beyond the libraries' own."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from mlsd.settings import MonitoringSettings
from monitoring.drift import SCORE, DriftResult, measure_drift
from monitoring.performance import click_through_by_arm, fraud_performance
from monitoring.quality import QualityResult, check_window
from monitoring.reference import ChampionReference
from monitoring.verdict import WindowVerdict
from monitoring.window import FRAUD_REQUEST_CATEGORICAL, WindowSpan

NOT_INPUTS = {SCORE, "label"}


@dataclass
class Judgement:
    verdict: WindowVerdict
    drift: DriftResult | None
    quality: QualityResult | None


def reference_columns(reference: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs of a reference frame."""
    inputs = [c for c in reference.columns if c not in NOT_INPUTS]
    categorical = [c for c in inputs if c in FRAUD_REQUEST_CATEGORICAL]
    return [c for c in inputs if c not in categorical], categorical


def enough_rows(rows: pd.DataFrame, span: WindowSpan, cfg: MonitoringSettings) -> bool:
    """At least the product's `min_rows`, spread over at least `min_coverage` of the window: a
    window whose traffic started (or whose version took over) late in it holds part of a
    simulated day, and drifts in its hour of day and its day's features alone (measured: the
    demo's first window, 32 s of traffic in 120 s, read 0.43 of the inputs as drifted)."""
    if len(rows) < cfg.min_rows_for(span.product):
        return False
    spread = float(rows["at"].max() - rows["at"].min()) if len(rows) else 0.0
    return spread >= cfg.min_coverage * (span.end - span.start)


def champion_rows(window: pd.DataFrame, version: str) -> pd.DataFrame:
    """Rows the champion version itself answered with its model (not a fallback)."""
    if window.empty:
        return window
    ours = window["model_version"].astype(str).str.split("/").str[-1] == str(version)
    return window[ours & window["has_features"] & ~window["degraded"].astype(bool)]


def judge_fraud(
    span: WindowSpan,
    window: pd.DataFrame,
    reference: ChampionReference,
    cfg: MonitoringSettings,
) -> Judgement:
    rows = champion_rows(window, reference.version).reset_index(drop=True)
    base = dict(
        window_id=span.window_id,
        product=span.product,
        model_version=reference.version,
        start=span.start,
        end=span.end,
        rows=len(rows),
    )
    if not enough_rows(rows, span, cfg):
        return Judgement(WindowVerdict(**base, status="not_enough_data"), None, None)  # type: ignore[arg-type]
    numeric, categorical = reference_columns(reference.frame)
    quality = check_window(rows, [*numeric, *categorical], reference.frame)
    drift = measure_drift(
        reference.frame,
        rows,
        numeric,
        categorical,
        cfg.drift,
        name=f"{span.product} window {span.window_id}",
        timestamp=dt.datetime.fromtimestamp(span.end, dt.UTC).replace(tzinfo=None),
    )
    perf = fraud_performance(rows, reference.threshold)
    verdict = WindowVerdict(
        **base,  # type: ignore[arg-type]
        status="judged",
        drifted_share=drift.drifted_share,
        drifted_columns=drift.drifted_columns,
        score_psi=drift.score_psi,
        quality_alert=not quality.success,
        failed_expectations=quality.failed,
        labelled_rows=perf.labelled_rows,
        labelled_positives=perf.labelled_positives,
        pr_auc=perf.pr_auc,
        reference_pr_auc=reference.validation_pr_auc,
        precision=perf.precision,
        recall=perf.recall,
        estimated_precision=perf.estimated_precision,
        estimated_alert_rate=perf.estimated_alert_rate,
        alert_rate=perf.alert_rate,
    )
    return Judgement(verdict, drift, quality)


def judge_recsys(span: WindowSpan, window: pd.DataFrame, cfg: MonitoringSettings) -> Judgement:
    """The recommender: click-through by arm and live quality of its scores. (The router logs
    no ranker features for a slate, so there are no inputs to judge drift on.)"""
    champion = window[window["arm"] == "champion"] if not window.empty else window
    versions = champion["model_version"].astype(str).value_counts() if len(champion) else None
    version = "" if versions is None or versions.empty else str(versions.index[0]).split("/")[-1]
    base = dict(
        window_id=span.window_id,
        product=span.product,
        model_version=version,
        start=span.start,
        end=span.end,
        rows=len(champion),
    )
    if not enough_rows(champion, span, cfg):
        return Judgement(WindowVerdict(**base, status="not_enough_data"), None, None)  # type: ignore[arg-type]
    scored = champion[champion["score"].notna()]
    quality = check_window(scored, [])
    verdict = WindowVerdict(
        **base,  # type: ignore[arg-type]
        status="judged",
        quality_alert=not quality.success,
        failed_expectations=quality.failed,
        labelled_rows=int(window["label"].notna().sum()),
        click_through=click_through_by_arm(window),
    )
    return Judgement(verdict, None, quality)
