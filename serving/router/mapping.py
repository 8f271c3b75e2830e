"""How a request becomes a model's V2 inputs, and an answer the response's fields and the row
the prediction log keeps (served and shadow rows alike)."""

from __future__ import annotations

from typing import Any

from serving.fallback import FraudAnswer, RecsAnswer
from serving.schemas import FraudDecision, RecsPath, RecsRequest, Transaction


def epoch(value: Any) -> float:
    return float(value.timestamp())


def fraud_columns(tx: Transaction) -> dict[str, list[Any]]:
    """A transaction as fraud-vN's V2 inputs (docs/inference-contract.md)."""
    return {
        "card_id": [tx.card_id],
        "merchant_id": [tx.merchant_id],
        "amount": [float(tx.amount)],
        "country": [tx.country],
        "device_id": [tx.device_id],
        "event_timestamp": [epoch(tx.timestamp)],
    }


def recs_columns(req: RecsRequest, now: float) -> dict[str, list[Any]]:
    """A recommendation request as recsys-vN's V2 inputs."""
    columns: dict[str, list[Any]] = {
        "user_id": [req.user_id],
        "k": [int(req.k)],
        "event_timestamp": [epoch(req.timestamp) if req.timestamp is not None else now],
    }
    if req.genre_hint is not None:
        columns["genre_hint"] = [req.genre_hint]
    return columns


def fraud_decision(answer: FraudAnswer) -> FraudDecision:
    return "block" if answer.decision == "block" else "allow"


def recs_path(answer: RecsAnswer) -> RecsPath:
    return "popularity" if answer.path == "popularity" else "model"


def logged_outcome(answer: FraudAnswer | RecsAnswer | None, k: int | None = None) -> dict[str, Any]:
    """What the prediction log keeps of an answer (served or shadow): output, score, decision
    and the features the model used; `k`: how many recommendations were asked for."""
    if isinstance(answer, FraudAnswer):
        decision = fraud_decision(answer)
        return {
            "output": {
                "score": answer.score,
                "decision": decision,
                "reasons": list(answer.reasons),
            },
            "score": answer.score,
            "decision": decision,
            "features": answer.features,
        }
    if isinstance(answer, RecsAnswer):
        shown = answer.items if k is None else answer.items[:k]
        return {
            "output": {
                "items": [{"item_id": i, "score": s} for i, s in shown],
                "path": recs_path(answer),
            },
            "score": shown[0][1] if shown else None,
            "decision": "recommend",
            "features": None,
        }
    return {"output": {}, "score": None, "decision": None, "features": None}
