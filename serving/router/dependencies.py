"""What the router's routes depend on: the app's Router, and the admin token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.router.core import Router

_bearer = HTTPBearer(auto_error=False, description="The router's admin token (see `mlsd`).")


# Dependencies are async on purpose: FastAPI runs a plain `def` dependency on its thread pool,
# two thread hops per request for nothing.
async def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = (await get_router(request)).admin_token.encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    # compare_digest: the time taken does not reveal how much of a guess was right.
    if credentials is None or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"}
        )


RouterDep = Annotated[Router, Depends(get_router)]
