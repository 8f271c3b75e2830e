"""The public routes: fraud scoring, recommendations, feedback, and the health probes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

from serving.names import PRODUCTS
from serving.router.core import Router
from serving.router.dependencies import RouterDep
from serving.schemas import (
    ErrorBody,
    FeedbackAck,
    FeedbackRequest,
    FraudScore,
    Recommendations,
    RecsRequest,
    Transaction,
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not valid UTF-8 or not valid JSON."},
    413: {"model": ErrorBody, "description": "Body larger than router.max_body_bytes."},
    422: {
        "description": "A field breaks a constraint of this schema: each error's `loc` names "
        "the field and `msg` the reason."
    },
}


def add_public_routes(app: FastAPI) -> None:
    # The two hot routes take the app's Router from the request and return their encoded
    # answer themselves: no dependency to solve, no second validation of the response model
    # (the answer is built as that model). The schema still documents both.
    @app.post("/v1/fraud/score", response_model=FraudScore, responses=_ERRORS, tags=["public"])
    async def score_fraud(tx: Transaction, request: Request) -> Response:
        """Score a card transaction. A failing model degrades (previous version, then rules)."""
        router: Router = request.app.state.router
        return _answer(await router.score_transaction(tx))

    @app.post("/v1/recs", response_model=Recommendations, responses=_ERRORS, tags=["public"])
    async def recommend(req: RecsRequest, request: Request) -> Response:
        """Top-k items for a listener; unknown listeners get the model's cold-start path."""
        router: Router = request.app.state.router
        return _answer(await router.recommend(req))

    @app.post(
        "/v1/feedback",
        response_model=FeedbackAck,
        responses={**_ERRORS, 404: {"model": ErrorBody, "description": "Unknown request_id."}},
        tags=["public"],
    )
    async def feedback(body: FeedbackRequest, router: RouterDep) -> FeedbackAck:
        """Join a label (fraud) or an engaged item (recs) to a prediction by request id."""
        return await router.record_feedback(body)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(router: RouterDep) -> dict[str, Any]:
        """Ready once started; says which products have a champion to route to."""
        return {
            "status": "ok",
            "champions": {p: router.store[p].champion for p in PRODUCTS},
        }


def _answer(answer: FraudScore | Recommendations) -> Response:
    return Response(
        content=answer.model_dump_json(),
        media_type="application/json",
        headers={"X-Request-ID": answer.request_id},
    )
