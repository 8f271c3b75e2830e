"""V2 answers decoded: a fraud-vN or recsys-vN response row as the router's answer
(docs/inference-contract.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FraudAnswer:
    score: float
    decision: str  # block | allow
    reasons: tuple[str, ...]
    model_version: str  # "fraud/3", "rules" or "rules:request"
    card_unknown: bool = False
    features: dict[str, Any] | None = None


def _cell(outputs: Mapping[str, list[Any]], name: str, row: int, default: Any) -> Any:
    """Row `row` of output `name`, or `default` when the server sent no such output."""
    data = outputs.get(name)
    return default if data is None else data[row]


def fraud_answer_from_outputs(
    outputs: Mapping[str, list[Any]], version: str, row: int = 0
) -> FraudAnswer:
    """Row `row` of a fraud-vN V2 response (docs/inference-contract.md)."""
    score = float(outputs["score"][row])
    if not math.isfinite(score):
        raise ValueError(f"score is {score}")
    reasons = str(_cell(outputs, "reasons", row, "") or "")
    features = _cell(outputs, "features", row, None)
    return FraudAnswer(
        score=score,
        decision=str(outputs["decision"][row]),
        reasons=tuple(r for r in reasons.split(",") if r),
        model_version=str(_cell(outputs, "model_version", row, version) or version),
        card_unknown=bool(int(_cell(outputs, "card_unknown", row, 0) or 0)),
        features=json.loads(features) if features else None,
    )


@dataclass(frozen=True)
class RecsAnswer:
    items: tuple[tuple[str, float], ...]  # (item_id, score), best first
    path: str  # model | popularity
    model_version: str  # "recsys/1" or "popularity"


def recs_answer_from_outputs(
    outputs: Mapping[str, list[Any]], version: str, row: int = 0
) -> RecsAnswer:
    """Row `row` of a recsys-vN V2 response (docs/inference-contract.md)."""
    ids = [i for i in str(outputs["item_ids"][row] or "").split(",") if i]
    raw_scores = [s for s in str(_cell(outputs, "scores", row, "") or "").split(",") if s]
    scores = [float(s) for s in raw_scores] if raw_scores else [0.0] * len(ids)
    if len(scores) != len(ids):
        raise ValueError(f"{len(ids)} item ids but {len(scores)} scores")
    return RecsAnswer(
        items=tuple(zip(ids, scores, strict=True)),
        path=str(_cell(outputs, "path", row, "model")),
        model_version=str(_cell(outputs, "model_version", row, version) or version),
    )
