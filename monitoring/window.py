"""Windows of the prediction log as frames: the model's inputs as the router logged them, the
score, the decision and the label where one has landed.

Monitoring reads the log through `serving.prediction_log` (the layering test allows exactly that
module): the log's schema and its two backends live there, and a second reader would drift from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlsd.settings import Settings

# Request fields the fraud model sees besides its features (amount_over_card_mean derives from
# amount; country is compared with the card's home country).
FRAUD_REQUEST_NUMERIC = ("amount",)
FRAUD_REQUEST_CATEGORICAL = ("country",)
META = (
    "request_id",
    "at",
    "arm",
    "model_version",
    "answered_by",
    "degraded",
    "score",
    "decision",
    "label",
)


@dataclass(frozen=True)
class WindowSpan:
    product: str
    start: float  # epoch seconds, inclusive
    end: float  # exclusive

    @property
    def window_id(self) -> str:
        return f"{self.product}-{int(self.start)}-{int(self.end)}"


def fraud_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per served prediction: its logged features, request amount and country, and the
    META columns (label NaN until a chargeback or its absence is reported)."""
    rows = []
    for r in records:
        row: dict[str, Any] = {k: getattr(r, k) for k in META}
        row["label"] = float("nan") if r.label is None else float(r.label)
        for k in (*FRAUD_REQUEST_NUMERIC, *FRAUD_REQUEST_CATEGORICAL):
            row[k] = (r.inputs or {}).get(k)
        row.update({k: v for k, v in (r.features or {}).items() if not k.endswith("_unknown")})
        row["has_features"] = r.features is not None
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else [*META, "has_features"])


def recsys_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per served slate: the top item's score, arm, label (clicked or played), how many
    items it showed and how many of them the listener engaged with (`shown`, `hits`)."""
    rows = [
        {
            **{k: getattr(r, k) for k in META},
            "label": float("nan") if r.label is None else float(r.label),
            "shown": len((r.output or {}).get("items") or ()),
            "hits": r.hits or 0,
            "path": (r.output or {}).get("path"),
            "has_features": False,
        }
        for r in records
    ]
    columns = [*META, "shown", "hits", "path", "has_features"]
    return pd.DataFrame(rows, columns=None if rows else columns)


async def _read(settings: Settings, span: WindowSpan, arms: Sequence[str]) -> list[Any]:
    from serving.prediction_log import open_prediction_log

    log = await open_prediction_log(settings)
    try:
        out: list[Any] = []
        for arm in arms:
            out += await log.window(span.product, arm, span.start, span.end, role="served")  # type: ignore[arg-type]
        return out
    finally:
        await log.close()


def read_window(
    settings: Settings, span: WindowSpan, arms: Sequence[str] = ("champion",)
) -> pd.DataFrame:
    """The served predictions of `arms` in the span, as the product's frame."""
    records = asyncio.run(_read(settings, span, arms))
    return fraud_frame(records) if span.product == "fraud" else recsys_frame(records)
