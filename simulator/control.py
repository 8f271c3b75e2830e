"""The world's control API (on bind_host, 127.0.0.1 unless set): how `mlsd traffic`, `mlsd drift`
and `mlsd status` reach the running world. Small and strict: unknown fields, a negative rate or an unknown
scenario get a 4xx naming the field and what is possible.

Run as the stack component `world`: `python -m simulator.control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mlsd.settings import Settings
from simulator.scenarios import SCENARIOS
from simulator.world import World

WorldName = Literal["fraud", "recsys"]


class TrafficRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraud_rps: float | None = Field(
        None, ge=0, le=500, allow_inf_nan=False, description="Mean fraud requests per second."
    )
    recs_rps: float | None = Field(
        None,
        ge=0,
        le=500,
        allow_inf_nan=False,
        description="Mean recommendation requests per second.",
    )


class DriftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str = Field(
        min_length=1,
        max_length=64,
        description="A scenario of this world (`mlsd scenarios`), or `none` for the world as it is.",
    )


def known_scenarios(world: str) -> list[str]:
    return sorted(s.name for s in SCENARIOS.values() if s.world == world)


def create_app(world: World) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner = asyncio.create_task(world.run())
        try:
            yield
        finally:
            world.stopping = True
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    app = FastAPI(
        title="mlsd world",
        description="Control the simulated world: its live traffic and its drift scenario.",
        lifespan=lifespan,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"} if world.live else {"status": "starting"}

    @app.get("/status")
    async def status() -> dict[str, Any]:
        """The world's clock, traffic, scenarios and what it sent, posted and landed."""
        return world.status()

    @app.put("/traffic")
    async def start_traffic(body: TrafficRequest) -> dict[str, Any]:
        """Start (or re-rate) the live traffic to the router."""
        world.set_traffic(True, body.fraud_rps, body.recs_rps)
        return world.status()["traffic"]

    @app.delete("/traffic")
    async def stop_traffic() -> dict[str, Any]:
        """Stop sending requests (the clock, labels and landing go on)."""
        world.set_traffic(False, None, None)
        return world.status()["traffic"]

    @app.put("/drift/{product}")
    async def inject(product: WorldName, body: DriftRequest) -> dict[str, Any]:
        """Switch this world's traffic and batches to a scenario from now on."""
        if body.scenario != "none" and body.scenario not in known_scenarios(product):
            raise HTTPException(
                422,
                f"scenario: unknown {product} scenario {body.scenario!r}; known: "
                f"{', '.join(known_scenarios(product))} (or none)",
            )
        return await world.inject(product, body.scenario)

    @app.delete("/drift/{product}")
    async def clear(product: WorldName) -> dict[str, Any]:
        """Back to the world as it normally is."""
        return await world.inject(product, None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status_code)

    return app


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    from mlsd.telemetry import quiet_libraries

    settings = Settings()
    parser = argparse.ArgumentParser(description="The simulated world on a clock.")
    parser.add_argument("--host", default=settings.bind_host)
    parser.add_argument("--port", type=int, default=settings.world.port)
    args = parser.parse_args(argv)
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One line per request the world sends would bury what matters in its log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(World(settings))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
