"""The `monitor` Prefect flow: judge the latest window of one product's prediction log, leave its
report, emit what it found, and let the trigger policy decide on a retrain.

A failing step (the log unreadable, Evidently failing) fails the flow run before anything is
emitted: no retrain, and serving is never touched by monitoring at all.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as prefect_flow_run
from prefect.utilities.urls import url_for

import mlsd.events as events
from mlsd.settings import Settings
from monitoring.history import product_dir, read_history
from monitoring.judge import Judgement, judge_fraud, judge_recsys
from monitoring.outputs import references_dir, write_summary, write_window
from monitoring.reference import ChampionReference, load_champion_reference
from monitoring.retrain import apply_trigger, payload
from monitoring.trigger import TriggerPolicy, window_signals
from monitoring.window import WindowSpan, read_window

PRODUCTS = ("fraud", "recsys")


@task(name="read window", cache_policy=NO_CACHE)
def read_window_task(settings: Settings, span: WindowSpan) -> Any:
    arms = ("champion",) if span.product == "fraud" else ("champion", "challenger")
    return read_window(settings, span, arms)


@task(name="load reference", cache_policy=NO_CACHE)
def load_reference_task(settings: Settings, product: str) -> ChampionReference:
    return load_champion_reference(
        settings.mlflow_tracking_uri,
        product,
        settings.training.model_name(product),
        cache_dir=references_dir(settings.monitoring_dir),
    )


@task(name="judge window", cache_policy=NO_CACHE)
def judge_task(
    settings: Settings, span: WindowSpan, window: Any, reference: ChampionReference | None
) -> Judgement:
    if span.product == "fraud":
        assert reference is not None
        return judge_fraud(span, window, reference, settings.monitoring)
    return judge_recsys(span, window, settings.monitoring)


def emit_findings(j: Judgement, policy: TriggerPolicy, report: str | None) -> None:
    """WINDOW_JUDGED always; DRIFT_DETECTED, PERFORMANCE_DROPPED, QUALITY_ALERT as found."""
    v = j.verdict
    resource = events.model_resource(v.product)
    related = [events.version_related(v.product, v.model_version)] if v.model_version else None
    figures = {
        "window_id": v.window_id,
        "status": v.status,
        "rows": v.rows,
        "drifted_share": v.drifted_share,
        "drifted_columns": list(v.drifted_columns),
        "score_psi": v.score_psi,
        "pr_auc": v.pr_auc,
        "reference_pr_auc": v.reference_pr_auc,
        "precision": v.precision,
        "estimated_precision": v.estimated_precision,
        "alert_rate": v.alert_rate,
        "estimated_alert_rate": v.estimated_alert_rate,
        "click_through": v.click_through,
        "report": report,
    }
    events.emit(events.WINDOW_JUDGED, resource, figures, related)
    if v.quality_alert:
        events.emit(
            events.QUALITY_ALERT,
            resource,
            {**figures, "reason": "; ".join(v.failed_expectations)},
            related,
        )
        return
    signals = window_signals(v, policy)
    if "input_drift" in signals or "score_drift" in signals:
        events.emit(events.DRIFT_DETECTED, resource, figures, related)
    if "performance_drop" in signals:
        events.emit(events.PERFORMANCE_DROPPED, resource, figures, related)


@flow(name="monitor", log_prints=True)
def monitor(
    product: str = "fraud", window_seconds: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """Judge the `window_seconds` (default monitoring.window_seconds) of `product`'s prediction
    log before `until` (epoch seconds, default now) against its champion's reference; returns
    the verdict and the decision."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; monitor one of: {', '.join(PRODUCTS)}")
    settings = Settings()
    logger = get_run_logger()
    end = time.time() if until is None else until
    span = WindowSpan(product, end - (window_seconds or settings.monitoring.window_seconds), end)
    reference = load_reference_task(settings, product) if product == "fraud" else None
    window = read_window_task(settings, span)
    judgement = judge_task(settings, span, window, reference)
    policy = TriggerPolicy.from_settings(settings.monitoring, product)
    monitoring_dir = settings.monitoring_dir
    files = write_window(monitoring_dir, judgement, None)
    emit_findings(judgement, policy, str(files.html) if files.html else None)
    # The trigger decides as of this window's end: a window judged on demand over a past span
    # (`mlsd monitor`, a walkthrough's) is the latest evidence of its decision, not whichever
    # scheduled window happened to end later.
    history = read_history(monitoring_dir, product, until=span.end)
    decision = apply_trigger(product_dir(monitoring_dir, product), product, history, policy)
    write_summary(
        monitoring_dir, judgement, {"action": decision.action, **payload(decision, history)}
    )
    logger.info(
        "%s: %s; trigger: %s (%s)",
        span.window_id,
        judgement.verdict.status,
        decision.action,
        decision.reason,
    )
    return {
        "verdict": judgement.verdict.as_dict(),
        "decision": {
            "action": decision.action,
            "reason": decision.reason,
            "window_ids": list(decision.window_ids),
        },
        "summary": str(files.summary),
        "report": str(files.html) if files.html else None,
        "snapshot": files.snapshot_id,
        # Prefect's UI on this run, as Prefect's own log links it (prefect.runtime's ui_url
        # names a route the UI does not have).
        "flow_run_url": url_for("flow-run", obj_id=prefect_flow_run.id),
    }
