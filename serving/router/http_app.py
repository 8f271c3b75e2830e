"""The router's HTTP app: FastAPI with the fast lane for the two scoring routes, the request
body limit (413 before anything parses), a 422 that names the field and survives a NaN, and
`create_app`, which wires a Router to the public and admin routes."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mlsd.settings import Settings, get_settings
from serving.fast_lane import FastRoute, declared_length, read_body, replaying, serve_fast
from serving.names import PRODUCTS, Product
from serving.router.admin_routes import add_admin_routes
from serving.router.core import Router
from serving.router.public_routes import add_public_routes
from serving.schemas import RecsRequest, Transaction
from serving.upstream import V2Client


class BodySizeLimit:
    """Answers 413 to a request body over `max_bytes`, before anything parses it (a declared
    Content-Length is refused at once; a chunked body is counted as it arrives)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        received = await read_body(receive, self.max_bytes)
        if received.disconnected:
            return
        if not received.within(self.max_bytes):
            await self._too_large(send)
            return
        await self.app(scope, replaying(received, receive), send)

    async def _too_large(self, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


def _json_safe(value: Any) -> Any:
    """NaN and infinities as strings: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (each error's loc names the field), but safe for a rejected NaN: the
    default handler echoes the input back and fails to encode it, which would be a 500."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))}
    )


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with an `Allow` header listing every method the published schema gives the path.
    (Starlette lists only the first route whose path matched, so `OPTIONS /admin/fraud/split`
    said PUT but not DELETE.)"""
    allowed = sorted(
        method.upper()
        for template, operations in request.app.openapi()["paths"].items()
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path)
        for method in operations
    )
    return JSONResponse(
        {"detail": f"method {request.method} not allowed on {request.url.path}"},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return await method_not_allowed(request, exc)
    return await http_exception_handler(request, exc)


def add_offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served from the installed
    `fastapi-offline` package, not a CDN: they work offline and phone nobody."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline.core import _STATIC_PATH

    static = "/static-offline-docs"
    app.mount(static, StaticFiles(directory=_STATIC_PATH), name="static-offline-docs")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{static}/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.png",
            with_google_fonts=False,
        )


class RouterApp(FastAPI):
    """The router's app: FastAPI, with the two scoring routes also on the fast lane (see
    serving.fast_lane). Their FastAPI routes stay: they document the API and answer whatever
    the fast lane hands on (every 4xx)."""

    fast_routes: Mapping[str, FastRoute] = {}
    max_body_bytes: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_fast(
            self.fast_routes, self.max_body_bytes, scope, receive, send, super().__call__
        )


def create_app(
    settings: Settings | None = None,
    clients: Mapping[Product, V2Client] | None = None,
    shadow_clients: Mapping[Product, V2Client] | None = None,
) -> RouterApp:
    """The router app. `clients` (and `shadow_clients`) replace the model-server clients
    (tests give fakes)."""
    settings = settings or get_settings()
    cap = settings.router.max_upstream_response_bytes
    upstreams = clients or {
        p: V2Client(settings.upstream_url(p), max_response_bytes=cap) for p in PRODUCTS
    }
    if shadow_clients is None and clients is None:
        shadow_clients = {
            p: V2Client(url, max_response_bytes=cap)
            for p in PRODUCTS
            if (url := settings.shadow_server_url(p))
        }
    router = Router(settings, upstreams, shadow_clients)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    app = RouterApp(
        title="mlsd-lab router",
        version="1",
        description="Fraud scoring and recommendations in front of the KServe model servers, "
        "with sticky A/B splits, shadow traffic, canaries and safe degradation.",
        lifespan=lifespan,
        docs_url=None,  # served from the installed package below, not a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.router = router
    app.max_body_bytes = settings.router.max_body_bytes
    app.fast_routes = {
        "/v1/fraud/score": FastRoute(Transaction, router.score_transaction),
        "/v1/recs": FastRoute(RecsRequest, router.recommend),
    }
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.router.max_body_bytes)
    add_public_routes(app)
    add_admin_routes(app)
    return app
