"""`mlsd status`'s monitoring block: each product's latest window, what it showed, what the
trigger decided, the last retrain request; read from the files the monitor flow writes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mlsd.commands.monitor import collect_monitoring, describe_verdict, render_monitoring
from mlsd.settings import Settings
from monitoring.history import product_dir
from monitoring.judge import Judgement
from monitoring.outputs import write_summary
from monitoring.retrain import _write_state, last_request
from monitoring.trigger import TriggerDecision
from monitoring.verdict import WindowVerdict


def verdict(product: str, end: float, **figures: object) -> WindowVerdict:
    base = dict(
        window_id=f"{product}-{int(end) - 40}-{int(end)}",
        product=product,
        model_version="4",
        start=end - 40,
        end=end,
        rows=1600,
        status="judged",
    )
    return WindowVerdict(**{**base, **figures})  # type: ignore[arg-type]


def render(data: dict) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render_monitoring(data))
    return console.export_text()


def test_status_shows_each_products_latest_window_and_the_trigger(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    assert collect_monitoring(settings, []) is None  # before any window: no block at all
    monitoring = settings.monitoring_dir
    drifted = verdict(
        "fraud",
        1_796_000_000.0,
        drifted_share=0.19,
        drifted_columns=("amount", "amount_over_card_mean", "card_tx_amount_24h", "x"),
        score_psi=0.011,
    )
    decision = {"action": "retrain", "reason": "input_drift in 2 of the last 3 windows"}
    write_summary(monitoring, Judgement(drifted, None, None), decision)
    small = verdict("fraud", 1_796_000_015.0, rows=247, status="not_enough_data")
    write_summary(monitoring, Judgement(small, None, None), {"action": "none", "reason": "x"})
    slates = verdict("recsys", 1_796_000_010.0, rows=190, click_through={"champion": 0.41})
    write_summary(monitoring, Judgement(slates, None, None), {"action": "none", "reason": "y"})
    _write_state(
        product_dir(monitoring, "fraud") / "trigger.json",
        1_796_000_001.0,
        TriggerDecision("retrain", decision["reason"], (drifted.window_id,)),
    )

    data = collect_monitoring(settings, [])
    fraud = data["products"]["fraud"]
    assert fraud["latest"]["window_id"] == small.window_id
    assert fraud["latest_judged"]["window_id"] == drifted.window_id
    assert fraud["last_request"]["reason"] == decision["reason"]
    assert last_request(product_dir(monitoring, "recsys")) is None
    text = render(data)
    assert "not enough data (247 rows)" in text
    assert "last judged: 1600 rows; 4 inputs drifted (0.19); score PSI 0.011" in text
    assert "190 slates; click-through champion 0.410" in text
    assert "last retrain asked" in text and "input_drift in 2 of the last 3" in text
    assert "mlsd ui evidently" in text


def test_a_quality_alert_reads_as_one_and_not_as_drift():
    alert = verdict(
        "fraud", 1.0, quality_alert=True, failed_expectations=("amount must not be null",)
    )
    assert describe_verdict(alert.as_dict()) == "quality alert: amount must not be null"
